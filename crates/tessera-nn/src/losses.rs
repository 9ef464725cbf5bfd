//! Losses, written with public ops (so they differentiate, batch under `vmap` and compile).
//!
//! Each doc states the formula and the PyTorch function it matches. Functions with a
//! [`Reduction`] argument reduce the per-element losses as PyTorch's `reduction=` does; the
//! older [`mse_loss`] and [`cross_entropy`] keep their signatures (mean reduction).
//!
//! Class axes are **last** (MLX's convention): logits are `(..., C)` and class-index targets
//! `(...)`. PyTorch's `(N, C, d1, ...)` layout corresponds to moving its axis 1 to the end.

use tessera_core::ops::{self, Axes};
use tessera_core::{Array, Dtype, Error, Result};

/// How per-element losses are combined, as PyTorch's `reduction=` argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// No reduction: one loss per element (or per sample for class losses).
    None,
    /// The mean (PyTorch's default). Weighted class losses divide by the summed weights.
    #[default]
    Mean,
    /// The sum.
    Sum,
}

/// The reductions of [`kl_div`], PyTorch's `reduction=` there (which adds `"batchmean"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KlReduction {
    /// One value per element.
    None,
    /// The mean over all elements (PyTorch's default, though not the true KL divergence).
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// The sum divided by the size of axis 0 (the mathematically correct KL per sample).
    BatchMean,
}

fn invalid<T>(op: &'static str, msg: String) -> Result<T> {
    Err(Error::Invalid { op, msg })
}

fn sc(v: f64, like: &Array) -> Array {
    Array::scalar_of(v, like.dtype())
}

/// `x` in at least float32.
fn float(x: &Array) -> Result<Array> {
    x.astype(x.dtype().at_least_float())
}

fn same_shape(op: &'static str, what: &str, a: &Array, b: &Array) -> Result<()> {
    if a.shape() != b.shape() {
        return invalid(
            op,
            format!(
                "{what} shapes differ: {:?} and {:?} must be equal",
                a.shape(),
                b.shape()
            ),
        );
    }
    Ok(())
}

fn reduce(per: &Array, reduction: Reduction) -> Result<Array> {
    match reduction {
        Reduction::None => Ok(per.clone()),
        Reduction::Mean => ops::mean(per, Axes::All, false),
        Reduction::Sum => ops::sum(per, Axes::All, false),
    }
}

/// Mean squared error `mean((pred - target)^2)` (shapes broadcast). PyTorch: `F.mse_loss`.
pub fn mse_loss(pred: &Array, target: &Array) -> Result<Array> {
    ops::mean(
        &ops::square(&ops::subtract(pred, target)?)?,
        Axes::All,
        false,
    )
}

/// Squared error `(pred - target)^2` reduced by `reduction`. PyTorch:
/// `F.mse_loss(pred, target, reduction=...)`. `Err` unless the shapes are equal.
pub fn mse_loss_with(pred: &Array, target: &Array, reduction: Reduction) -> Result<Array> {
    same_shape("mse_loss", "pred and target", pred, target)?;
    reduce(&ops::square(&ops::subtract(pred, target)?)?, reduction)
}

/// Absolute error `|pred - target|` reduced by `reduction` (derivative `sign`, 0 at 0).
/// PyTorch: `F.l1_loss`. `Err` unless the shapes are equal.
pub fn l1_loss(pred: &Array, target: &Array, reduction: Reduction) -> Result<Array> {
    same_shape("l1_loss", "pred and target", pred, target)?;
    reduce(&ops::abs(&ops::subtract(pred, target)?)?, reduction)
}

/// With `d = pred - target`: `0.5 d^2 / beta` where `|d| < beta`, else `|d| - 0.5 beta`
/// (`beta = 0` is [`l1_loss`]). PyTorch: `F.smooth_l1_loss(pred, target, beta=...)` (default
/// 1.0). `Err` for a negative or non-finite `beta` or unequal shapes.
pub fn smooth_l1_loss(
    pred: &Array,
    target: &Array,
    beta: f64,
    reduction: Reduction,
) -> Result<Array> {
    same_shape("smooth_l1_loss", "pred and target", pred, target)?;
    if !(beta >= 0.0 && beta.is_finite()) {
        return invalid(
            "smooth_l1_loss",
            format!("beta must be finite and >= 0, got {beta}"),
        );
    }
    if beta == 0.0 {
        return l1_loss(pred, target, reduction);
    }
    let d = float(&ops::subtract(pred, target)?)?;
    let a = ops::abs(&d)?;
    let quad = ops::multiply(&ops::square(&d)?, &sc(0.5 / beta, &d))?;
    let lin = ops::subtract(&a, &sc(0.5 * beta, &d))?;
    reduce(
        &ops::where_(&ops::less(&a, &sc(beta, &d))?, &quad, &lin)?,
        reduction,
    )
}

/// With `d = pred - target`: `0.5 d^2` where `|d| <= delta`, else `delta (|d| - 0.5 delta)`.
/// PyTorch: `F.huber_loss(pred, target, delta=...)` (default 1.0). `Err` for a non-positive or
/// non-finite `delta` or unequal shapes.
pub fn huber_loss(pred: &Array, target: &Array, delta: f64, reduction: Reduction) -> Result<Array> {
    same_shape("huber_loss", "pred and target", pred, target)?;
    if !(delta > 0.0 && delta.is_finite()) {
        return invalid(
            "huber_loss",
            format!("delta must be finite and > 0, got {delta}"),
        );
    }
    let d = float(&ops::subtract(pred, target)?)?;
    let a = ops::abs(&d)?;
    let quad = ops::multiply(&ops::square(&d)?, &sc(0.5, &d))?;
    let lin = ops::multiply(&ops::subtract(&a, &sc(0.5 * delta, &d))?, &sc(delta, &d))?;
    reduce(
        &ops::where_(&ops::less(&a, &sc(delta, &d))?, &quad, &lin)?,
        reduction,
    )
}

/// Options of [`cross_entropy_with`] and (without smoothing) [`nll_loss`], PyTorch's keyword
/// arguments of `F.cross_entropy`. `Default` is PyTorch's default (no weights, nothing ignored,
/// no smoothing, mean).
#[derive(Clone, Debug, Default)]
pub struct CrossEntropyOptions {
    /// Per-class weights, shape `(C,)`.
    pub weight: Option<Array>,
    /// Targets equal to this class index contribute nothing and are left out of the mean's
    /// denominator (PyTorch's `ignore_index`, default -100 there). Index targets only.
    pub ignore_index: Option<i64>,
    /// In [0, 1]: the target becomes `(1 - s) * target + s / C`.
    pub label_smoothing: f64,
    /// How the per-sample losses are combined.
    pub reduction: Reduction,
}

/// Cross entropy of `logits` (batch, classes) against integer class indices (batch,):
/// `mean(logsumexp(logits) - logits[target])`, with optional label smoothing as PyTorch's.
/// PyTorch: `F.cross_entropy(logits, targets, label_smoothing=...)`. See
/// [`cross_entropy_with`] for probabilities as targets, weights, `ignore_index` and reductions.
pub fn cross_entropy(logits: &Array, targets: &Array, label_smoothing: f64) -> Result<Array> {
    if logits.ndim() != 2 || targets.ndim() != 1 || targets.shape()[0] != logits.shape()[0] {
        return invalid(
            "cross_entropy",
            format!(
                "logits {:?} need shape (batch, classes) and targets {:?} shape (batch,)",
                logits.shape(),
                targets.shape()
            ),
        );
    }
    cross_entropy_with(
        logits,
        targets,
        &CrossEntropyOptions {
            label_smoothing,
            ..Default::default()
        },
    )
}

/// Cross entropy of `logits` `(..., C)` (classes last) against either
///
/// - integer class indices `(...)`: per sample `-w[y] * logp[y]` with `logp = log_softmax(logits)`;
///   with label smoothing `s` it is `(1 - s) * (-w[y] logp[y]) + s / C * (-sum_c w_c logp_c)`;
///   samples whose target is `ignore_index` give 0, and the mean divides by the summed
///   `w[y]` of the others (their count without weights), as PyTorch;
/// - class probabilities `(..., C)` (float, same shape as the logits): per sample
///   `-sum_c w_c t_c logp_c` with `t = (1 - s) * target + s / C`; the mean divides by the
///   number of samples. `ignore_index` must be `None`.
///
/// PyTorch: `F.cross_entropy(logits, target, weight, ignore_index=..., reduction=...,
/// label_smoothing=...)` (with the class axis moved last). `Err` for other shapes or dtypes, a
/// weight not `(C,)`, or smoothing outside [0, 1]. Index targets out of range are an error at
/// evaluation.
pub fn cross_entropy_with(
    logits: &Array,
    targets: &Array,
    opts: &CrossEntropyOptions,
) -> Result<Array> {
    const OP: &str = "cross_entropy";
    if logits.ndim() == 0 {
        return invalid(OP, "logits must have a class axis, got a scalar".into());
    }
    let smoothing = opts.label_smoothing;
    if !(0.0..=1.0).contains(&smoothing) {
        return invalid(
            OP,
            format!("label_smoothing must be in [0, 1], got {smoothing}"),
        );
    }
    let c = logits.shape()[logits.ndim() - 1];
    let weight = check_weight(OP, opts.weight.as_ref(), c)?;
    let logp = ops::log_softmax(&float(logits)?, -1)?;
    let weight = weight.map(|w| w.astype(logp.dtype())).transpose()?;
    let lead = &logits.shape()[..logits.ndim() - 1];
    if targets.dtype().is_float() && targets.shape() == logits.shape() {
        if opts.ignore_index.is_some() {
            return invalid(
                OP,
                "ignore_index applies to class-index targets, not probabilities".into(),
            );
        }
        let t = targets.astype(logp.dtype())?;
        let t = if smoothing > 0.0 {
            ops::add(
                &ops::multiply(&t, &sc(1.0 - smoothing, &t))?,
                &sc(smoothing / c as f64, &t),
            )?
        } else {
            t
        };
        let mut prod = ops::multiply(&logp, &t)?;
        if let Some(w) = &weight {
            prod = ops::multiply(&prod, w)?;
        }
        let per = ops::negative(&ops::sum(&prod, -1, false)?)?;
        return reduce(&per, opts.reduction);
    }
    if !targets.dtype().is_integer() || targets.shape() != lead {
        return invalid(
            OP,
            format!(
                "targets {:?} ({}) must be class indices of shape {:?} (an integer dtype) or \
                 probabilities of the logits' shape {:?} (a float dtype)",
                targets.shape(),
                targets.dtype(),
                lead,
                logits.shape()
            ),
        );
    }
    let picked = pick(&logp, targets, weight.as_ref(), opts.ignore_index)?;
    let mut per = picked.loss.clone();
    if smoothing > 0.0 {
        let wl = match &weight {
            Some(w) => ops::multiply(&logp, w)?,
            None => logp.clone(),
        };
        let mut smooth = ops::negative(&ops::sum(&wl, -1, false)?)?;
        if let Some(m) = &picked.mask {
            smooth = ops::where_(m, &smooth, &sc(0.0, &smooth))?;
        }
        per = ops::add(
            &ops::multiply(&per, &sc(1.0 - smoothing, &per))?,
            &ops::multiply(&smooth, &sc(smoothing / c as f64, &per))?,
        )?;
    }
    reduce_picked(&per, &picked, opts.reduction)
}

/// Negative log likelihood of log-probabilities `(..., C)` (classes last) at integer class
/// indices `(...)`: per sample `-w[y] * log_probs[y]`, 0 where the target is `ignore_index`;
/// the mean divides by the summed `w[y]` of the samples not ignored (their count without
/// weights). PyTorch: `F.nll_loss(input, target, weight, ignore_index=..., reduction=...)` (with
/// the class axis moved last). `Err` for other shapes or dtypes or a weight not `(C,)`.
pub fn nll_loss(
    log_probs: &Array,
    targets: &Array,
    weight: Option<&Array>,
    ignore_index: Option<i64>,
    reduction: Reduction,
) -> Result<Array> {
    const OP: &str = "nll_loss";
    if log_probs.ndim() == 0
        || !targets.dtype().is_integer()
        || targets.shape() != &log_probs.shape()[..log_probs.ndim() - 1]
    {
        return invalid(
            OP,
            format!(
                "input {:?} needs shape (..., classes) and targets {:?} ({}) integer class \
                 indices of shape (...)",
                log_probs.shape(),
                targets.shape(),
                targets.dtype()
            ),
        );
    }
    let c = log_probs.shape()[log_probs.ndim() - 1];
    let lp = float(log_probs)?;
    let weight = check_weight(OP, weight, c)?
        .map(|w| w.astype(lp.dtype()))
        .transpose()?;
    let picked = pick(&lp, targets, weight.as_ref(), ignore_index)?;
    reduce_picked(&picked.loss.clone(), &picked, reduction)
}

fn check_weight<'a>(op: &'static str, w: Option<&'a Array>, c: usize) -> Result<Option<&'a Array>> {
    if let Some(w) = w
        && w.shape() != [c]
    {
        return invalid(
            op,
            format!("the class weight {:?} must have shape ({c},)", w.shape()),
        );
    }
    Ok(w)
}

/// Per-sample `-w[y] logp[y]` with the mask of kept samples and their weights.
struct Picked {
    loss: Array,
    /// Kept samples (None: all).
    mask: Option<Array>,
    /// `w[y]` zeroed where ignored (None: no weights).
    weights: Option<Array>,
}

fn pick(
    logp: &Array,
    targets: &Array,
    weight: Option<&Array>,
    ignore_index: Option<i64>,
) -> Result<Picked> {
    let (mask, idx) = match ignore_index {
        Some(ig) => {
            let m = ops::not_equal(targets, &Array::scalar_of(ig as f64, targets.dtype()))?;
            let safe = ops::where_(&m, targets, &Array::scalar_of(0.0, targets.dtype()))?;
            (Some(m), safe)
        }
        None => (None, targets.clone()),
    };
    let g = ops::take_along_axis(logp, &ops::expand_dims(&idx, &[-1])?, Some(-1))?;
    let mut loss = ops::negative(&ops::squeeze(&g, -1)?)?;
    let mut weights = None;
    if let Some(w) = weight {
        let wy = ops::take(w, &idx, Some(0))?;
        loss = ops::multiply(&loss, &wy)?;
        weights = Some(match &mask {
            Some(m) => ops::where_(m, &wy, &sc(0.0, &wy))?,
            None => wy,
        });
    }
    if let Some(m) = &mask {
        loss = ops::where_(m, &loss, &sc(0.0, &loss))?;
    }
    Ok(Picked {
        loss,
        mask,
        weights,
    })
}

fn reduce_picked(per: &Array, p: &Picked, reduction: Reduction) -> Result<Array> {
    match reduction {
        Reduction::Mean => {
            let total = ops::sum(per, Axes::All, false)?;
            let denom = match (&p.weights, &p.mask) {
                (Some(w), _) => ops::sum(w, Axes::All, false)?,
                (None, Some(m)) => ops::sum(&m.astype(per.dtype())?, Axes::All, false)?,
                (None, None) => return ops::mean(per, Axes::All, false),
            };
            ops::divide(&total, &denom)
        }
        r => reduce(per, r),
    }
}

/// `log(x)` clamped below at -100 (PyTorch's BCE clamp), with a finite derivative at 0.
fn clamped_log(x: &Array) -> Result<Array> {
    let pos = ops::greater(x, &sc(0.0, x))?;
    let safe = ops::where_(&pos, x, &sc(1.0, x))?;
    let l = ops::maximum(&ops::log(&safe)?, &sc(-100.0, x))?;
    ops::where_(&pos, &l, &sc(-100.0, x))
}

fn apply_weight(op: &'static str, per: Array, weight: Option<&Array>) -> Result<Array> {
    match weight {
        None => Ok(per),
        Some(w) => {
            let out = ops::multiply(&per, &w.astype(per.dtype())?)?;
            if out.shape() != per.shape() {
                return invalid(
                    op,
                    format!(
                        "the weight {:?} must broadcast to the input {:?}",
                        w.shape(),
                        per.shape()
                    ),
                );
            }
            Ok(out)
        }
    }
}

/// Binary cross entropy of probabilities `p` against targets `y` (same shape):
/// `-w * (y log p + (1 - y) log(1 - p))` with each log clamped below at -100, as PyTorch.
/// `p` outside [0, 1] gives NaN (PyTorch raises). PyTorch:
/// `F.binary_cross_entropy(p, y, weight, reduction=...)`; `weight` broadcasts to `p`. At
/// `p` exactly 0 or 1 the derivative is the one of the clamped formula, where PyTorch's
/// backward uses `(p - y) / max(p (1 - p), 1e-12)`. `Err` for unequal shapes.
pub fn binary_cross_entropy(
    p: &Array,
    y: &Array,
    weight: Option<&Array>,
    reduction: Reduction,
) -> Result<Array> {
    const OP: &str = "binary_cross_entropy";
    same_shape(OP, "probabilities and targets", p, y)?;
    let p = float(p)?;
    let y = y.astype(p.dtype())?;
    let one = sc(1.0, &p);
    let a = ops::multiply(&y, &clamped_log(&p)?)?;
    let b = ops::multiply(
        &ops::subtract(&one, &y)?,
        &clamped_log(&ops::subtract(&one, &p)?)?,
    )?;
    let per = ops::negative(&ops::add(&a, &b)?)?;
    reduce(&apply_weight(OP, per, weight)?, reduction)
}

/// Binary cross entropy of logits `x` against targets `y` (same shape), computed stably as
/// `w * ((1 - y) x + (1 + (pw - 1) y) softplus(-x))` with `softplus(-x) = logaddexp(-x, 0)`,
/// i.e. `-w (pw y log sigmoid(x) + (1 - y) log(1 - sigmoid(x)))`. `pos_weight` (`pw`)
/// broadcasts along the last axis (one per class) and `weight` to `x`. PyTorch:
/// `F.binary_cross_entropy_with_logits(x, y, weight, reduction=..., pos_weight=...)`. `Err`
/// for unequal shapes or weights that do not broadcast.
pub fn binary_cross_entropy_with_logits(
    x: &Array,
    y: &Array,
    weight: Option<&Array>,
    pos_weight: Option<&Array>,
    reduction: Reduction,
) -> Result<Array> {
    const OP: &str = "binary_cross_entropy_with_logits";
    same_shape(OP, "logits and targets", x, y)?;
    let x = float(x)?;
    let y = y.astype(x.dtype())?;
    let one = sc(1.0, &x);
    let sp = ops::logaddexp(&ops::negative(&x)?, &sc(0.0, &x))?;
    let lw_sp = match pos_weight {
        None => sp,
        Some(pw) => {
            let lw = ops::add(
                &ops::multiply(&ops::subtract(&pw.astype(x.dtype())?, &one)?, &y)?,
                &one,
            )?;
            let v = ops::multiply(&lw, &sp)?;
            if v.shape() != x.shape() {
                return invalid(
                    OP,
                    format!(
                        "pos_weight {:?} must broadcast to the logits {:?}",
                        pw.shape(),
                        x.shape()
                    ),
                );
            }
            v
        }
    };
    let per = ops::add(&ops::multiply(&ops::subtract(&one, &y)?, &x)?, &lw_sp)?;
    reduce(&apply_weight(OP, per, weight)?, reduction)
}

/// Kullback-Leibler divergence with `input` as log-probabilities: per element
/// `target * (log(target) - input)` (0 where `target` is 0, as `xlogy`), or with `log_target`
/// `exp(target) * (target - input)`. PyTorch: `F.kl_div(input, target, reduction=...,
/// log_target=...)`; [`KlReduction::BatchMean`] divides the sum by the size of axis 0. `Err`
/// for unequal shapes.
pub fn kl_div(
    input: &Array,
    target: &Array,
    reduction: KlReduction,
    log_target: bool,
) -> Result<Array> {
    const OP: &str = "kl_div";
    same_shape(OP, "input and target", input, target)?;
    let x = float(input)?;
    let t = target.astype(x.dtype())?;
    let per = if log_target {
        ops::multiply(&ops::exp(&t)?, &ops::subtract(&t, &x)?)?
    } else {
        // xlogy(t, t) - t * x, with xlogy(0, 0) = 0 and a finite derivative there.
        let zero = ops::equal(&t, &sc(0.0, &t))?;
        let safe = ops::where_(&zero, &sc(1.0, &t), &t)?;
        let xlogy = ops::where_(&zero, &sc(0.0, &t), &ops::multiply(&t, &ops::log(&safe)?)?)?;
        ops::subtract(&xlogy, &ops::multiply(&t, &x)?)?
    };
    match reduction {
        KlReduction::None => Ok(per),
        KlReduction::Mean => ops::mean(&per, Axes::All, false),
        KlReduction::Sum => ops::sum(&per, Axes::All, false),
        KlReduction::BatchMean => {
            let n = if per.ndim() == 0 { 1 } else { per.shape()[0] };
            ops::divide(&ops::sum(&per, Axes::All, false)?, &sc(n as f64, &per))
        }
    }
}

/// Cosine similarity along `axis`: `sum(x1 * x2) / (max(|x1|, eps) * max(|x2|, eps))`, each
/// input divided by its clamped norm first as PyTorch does (`x1` and `x2` broadcast; the axis is
/// removed). PyTorch: `F.cosine_similarity(x1, x2, dim=axis, eps=...)` (defaults 1 and 1e-8).
/// The clamp is `sqrt(max(|x|^2, eps^2))`, so a zero vector has a finite derivative. `Err` when
/// the shapes do not broadcast or the axis is out of range.
pub fn cosine_similarity(x1: &Array, x2: &Array, axis: isize, eps: f64) -> Result<Array> {
    const OP: &str = "cosine_similarity";
    let shape = ops::broadcast_shapes(OP, x1.shape(), x2.shape())?;
    let ax = ops::normalize_axis(OP, axis, shape.len())? as isize;
    let dt = tessera_core::promote_types(x1.dtype(), x2.dtype()).at_least_float();
    let a = ops::broadcast_to(&x1.astype(dt)?, &shape)?;
    let b = ops::broadcast_to(&x2.astype(dt)?, &shape)?;
    let norm = |v: &Array| -> Result<Array> {
        let s2 = ops::sum(&ops::square(v)?, ax, true)?;
        ops::sqrt(&ops::maximum(&s2, &sc(eps * eps, v))?)
    };
    let an = ops::divide(&a, &norm(&a)?)?;
    let bn = ops::divide(&b, &norm(&b)?)?;
    ops::sum(&ops::multiply(&an, &bn)?, ax, false)
}

/// Cosine embedding loss of `x1`, `x2` `(N, D)` (or `(D,)`) with labels `y` `(N,)` (or `()`) in
/// {1, -1}: `1 - cos` where `y = 1`, `max(0, cos - margin)` where `y = -1` (0 for other labels),
/// with `cos = x1·x2 / sqrt((|x1|^2 + 1e-12)(|x2|^2 + 1e-12))` over the last axis, as PyTorch.
/// PyTorch: `F.cosine_embedding_loss(x1, x2, y, margin=..., reduction=...)`. `Err` for other
/// shapes.
pub fn cosine_embedding_loss(
    x1: &Array,
    x2: &Array,
    y: &Array,
    margin: f64,
    reduction: Reduction,
) -> Result<Array> {
    const OP: &str = "cosine_embedding_loss";
    if x1.shape() != x2.shape()
        || !(x1.ndim() == 1 || x1.ndim() == 2)
        || y.shape() != &x1.shape()[..x1.ndim() - 1]
    {
        return invalid(
            OP,
            format!(
                "inputs {:?} and {:?} must both be (N, D) or (D,), and the labels {:?} (N,) or ()",
                x1.shape(),
                x2.shape(),
                y.shape()
            ),
        );
    }
    let dt = tessera_core::promote_types(x1.dtype(), x2.dtype()).at_least_float();
    let a = x1.astype(dt)?;
    let b = x2.astype(dt)?;
    let eps = Array::scalar_of(1e-12, dt);
    let prod = ops::sum(&ops::multiply(&a, &b)?, -1, false)?;
    let m1 = ops::add(&ops::sum(&ops::square(&a)?, -1, false)?, &eps)?;
    let m2 = ops::add(&ops::sum(&ops::square(&b)?, -1, false)?, &eps)?;
    let cos = ops::divide(&prod, &ops::sqrt(&ops::multiply(&m1, &m2)?)?)?;
    let zero = sc(0.0, &cos);
    let pos = ops::subtract(&sc(1.0, &cos), &cos)?;
    let shifted = ops::subtract(&cos, &sc(margin, &cos))?;
    // clamp_min's derivative: the gradient passes where shifted >= 0.
    let neg = ops::where_(&ops::greater_equal(&shifted, &zero)?, &shifted, &zero)?;
    let yf = y.astype(Dtype::F64)?;
    let per = ops::add(
        &ops::where_(&ops::equal(&yf, &Array::scalar(1.0f64))?, &pos, &zero)?,
        &ops::where_(&ops::equal(&yf, &Array::scalar(-1.0f64))?, &neg, &zero)?,
    )?;
    reduce(&per, reduction)
}
