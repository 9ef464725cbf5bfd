//! Convolutions: [`conv1d`], [`conv2d`], [`conv_transpose1d`], [`conv_transpose2d`] (and the
//! any-dimensional [`conv_nd`], [`conv_transpose_nd`]), and the layers [`Conv1d`], [`Conv2d`],
//! [`ConvTranspose1d`], [`ConvTranspose2d`].
//!
//! # Layout
//!
//! Channels last, as MLX: inputs are `(N, L, C_in)` / `(N, H, W, C_in)`, outputs
//! `(N, L_out, C_out)` / `(N, H_out, W_out, C_out)`. Weights are `(C_out, K, C_in / groups)` /
//! `(C_out, KH, KW, C_in / groups)`, for convolutions and transposed convolutions alike (MLX's
//! layout); the bias is `(C_out,)`. Parameters are named `weight` and `bias`, as in PyTorch, so
//! safetensors names of a Hugging Face / PyTorch model match, but PyTorch stores the tensors
//! channels first:
//!
//! - `torch.nn.Conv{1,2}d.weight` is `(C_out, C_in / groups, K...)`: move axis 1 to the end
//!   ([`conv_weight_from_pytorch`], i.e. `transpose(w, [0, 2, 1])` / `[0, 2, 3, 1]`).
//! - `torch.nn.ConvTranspose{1,2}d.weight` is `(C_in, C_out / groups, K...)`: view it as
//!   `(groups, C_in / groups, C_out / groups, K...)`, move the `C_in / groups` axis to the end
//!   and merge the first two axes ([`conv_transpose_weight_from_pytorch`]).
//! - Activations: PyTorch's `(N, C, H, W)` is `transpose(x, [0, 2, 3, 1])` here.
//!
//! # How
//!
//! Every op is a composite of public core ops (im2col): the input is padded, the kernel windows
//! are gathered with one strided slice per kernel offset and stacked to `(N, out..., K..., C_in)`,
//! and a single matmul (a batched one over the groups; an element-wise product and a sum for a
//! depthwise convolution) contracts them with the weight. Gradients, `vmap` and `compile` come
//! from the core transforms. A transposed convolution is the convolution of the input with
//! `stride - 1` zeros inserted between elements, padded by `dilation * (K - 1) - padding` (plus
//! `output_padding` at the end), with the kernel flipped: it costs about `stride^dims` times the
//! direct scatter form.

use crate::{Module, check_replacement};
use tessera_core::ops::{self, PadMode};
use tessera_core::transforms::Params;
use tessera_core::{Array, Dtype, Error, Result, random};

/// A size per spatial dimension (kernel, stride, padding, ...): one number for every dimension
/// (`2.into()`), or one each (`(2, 3).into()`, `[2, 3].into()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims<const D: usize>(pub [usize; D]);

impl<const D: usize> From<usize> for Dims<D> {
    fn from(v: usize) -> Self {
        Dims([v; D])
    }
}

impl<const D: usize> From<[usize; D]> for Dims<D> {
    fn from(v: [usize; D]) -> Self {
        Dims(v)
    }
}

impl From<(usize, usize)> for Dims<2> {
    fn from((a, b): (usize, usize)) -> Self {
        Dims([a, b])
    }
}

impl From<(usize, usize, usize)> for Dims<3> {
    fn from((a, b, c): (usize, usize, usize)) -> Self {
        Dims([a, b, c])
    }
}

/// `(2, 3)` as the core's error messages write shapes.
pub(crate) fn fmt_shape(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    if parts.len() == 1 {
        format!("({},)", parts[0])
    } else {
        format!("({})", parts.join(", "))
    }
}

pub(crate) fn invalid<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid {
        op,
        msg: msg.into(),
    })
}

/// How the shape of an input with `d` spatial dims is written in messages.
pub(crate) fn input_layout(d: usize) -> &'static str {
    match d {
        1 => "(N, L, C)",
        2 => "(N, H, W, C)",
        3 => "(N, D, H, W, C)",
        _ => "(N, spatial..., C)",
    }
}

fn weight_layout(d: usize) -> &'static str {
    match d {
        1 => "(C_out, K, C_in / groups)",
        2 => "(C_out, KH, KW, C_in / groups)",
        3 => "(C_out, KD, KH, KW, C_in / groups)",
        _ => "(C_out, K..., C_in / groups)",
    }
}

fn conv_name(d: usize) -> &'static str {
    match d {
        1 => "conv1d",
        2 => "conv2d",
        3 => "conv3d",
        _ => "conv",
    }
}

fn conv_transpose_name(d: usize) -> &'static str {
    match d {
        1 => "conv_transpose1d",
        2 => "conv_transpose2d",
        3 => "conv_transpose3d",
        _ => "conv_transpose",
    }
}

/// Checks that every entry of a per-dimension argument is at least 1.
pub(crate) fn check_positive<const D: usize>(
    op: &'static str,
    what: &str,
    v: &[usize; D],
) -> Result<()> {
    if v.contains(&0) {
        return invalid(op, format!("{what} must be at least 1, got {v:?}"));
    }
    Ok(())
}

/// Pads the spatial axes (1..=D) of a channels-last array with a constant; a no-op without
/// padding.
pub(crate) fn pad_spatial<const D: usize>(
    x: &Array,
    lo: &[usize; D],
    hi: &[usize; D],
    value: f64,
) -> Result<Array> {
    if lo.iter().chain(hi).all(|&p| p == 0) {
        return Ok(x.clone());
    }
    let mut widths = vec![(0, 0); x.ndim()];
    for i in 0..D {
        widths[1 + i] = (lo[i], hi[i]);
    }
    ops::pad(x, &widths, PadMode::Constant(value))
}

/// The kernel windows of a padded channels-last array `xp` (N, S..., C): one strided slice
/// (N, out..., C) per kernel offset, offsets in row-major order (the order of the weight's kernel
/// axes). `out` must be the output size the arguments give.
fn window_slices<const D: usize>(
    xp: &Array,
    kernel: &[usize; D],
    stride: &[usize; D],
    dilation: &[usize; D],
    out: &[usize; D],
) -> Result<Vec<Array>> {
    let count: usize = kernel.iter().product();
    let mut slices = Vec::with_capacity(count);
    let mut offset = [0usize; D];
    for _ in 0..count {
        let mut start = vec![0isize; D + 1];
        let mut stop = vec![xp.shape()[0] as isize; D + 1];
        let mut step = vec![1isize; D + 1];
        for i in 0..D {
            let s = offset[i] * dilation[i];
            start[1 + i] = s as isize;
            stop[1 + i] = (s + (out[i] - 1) * stride[i] + 1) as isize;
            step[1 + i] = stride[i] as isize;
        }
        slices.push(ops::slice(xp, &start, &stop, &step)?);
        // Next offset, last axis fastest.
        for i in (0..D).rev() {
            offset[i] += 1;
            if offset[i] < kernel[i] {
                break;
            }
            offset[i] = 0;
        }
    }
    Ok(slices)
}

/// [`window_slices`] stacked to (N, out..., prod(kernel), C).
pub(crate) fn windows<const D: usize>(
    xp: &Array,
    kernel: &[usize; D],
    stride: &[usize; D],
    dilation: &[usize; D],
    out: &[usize; D],
) -> Result<Array> {
    let slices = window_slices(xp, kernel, stride, dilation, out)?;
    ops::stack(&slices, (D + 1) as isize)
}

/// The convolution proper, on validated dims: pads by `lo`/`hi`, gathers the windows and
/// contracts them with the weight.
#[allow(clippy::too_many_arguments)]
fn conv_core<const D: usize>(
    op: &'static str,
    x: &Array,
    w: &Array,
    stride: &[usize; D],
    lo: &[usize; D],
    hi: &[usize; D],
    dilation: &[usize; D],
    groups: usize,
) -> Result<Array> {
    let n = x.shape()[0];
    let c_in = x.shape()[D + 1];
    let c_out = w.shape()[0];
    let cg = c_in / groups;
    let mut kernel = [0usize; D];
    let mut out = [0usize; D];
    for i in 0..D {
        kernel[i] = w.shape()[1 + i];
        let padded = x.shape()[1 + i] + lo[i] + hi[i];
        let extent = dilation[i] * (kernel[i] - 1) + 1;
        if padded < extent {
            return invalid(
                op,
                format!(
                    "the kernel spans {extent} on spatial axis {i} but the padded input has only \
                     {padded} (input {}, weight {})",
                    fmt_shape(x.shape()),
                    fmt_shape(w.shape())
                ),
            );
        }
        out[i] = (padded - extent) / stride[i] + 1;
    }
    let xp = pad_spatial(x, lo, hi, 0.0)?;
    let kk: usize = kernel.iter().product();
    let m = n * out.iter().product::<usize>();
    if groups > 1 && cg == 1 && c_out == groups {
        // Depthwise: one kernel per channel, so a sum of shifted slices scaled per channel (no
        // window stack; under `compile` the products and sums fuse).
        let wm = ops::reshape(w, &[c_out, kk])?;
        let mut acc: Option<Array> = None;
        for (k, s) in window_slices(&xp, &kernel, stride, dilation, &out)?
            .iter()
            .enumerate()
        {
            let wk = ops::reshape(&ops::slice_axis(&wm, 1, k, k + 1)?, &[c_out])?;
            let term = ops::multiply(s, &wk)?;
            acc = Some(match acc {
                Some(a) => ops::add(&a, &term)?,
                None => term,
            });
        }
        return acc.ok_or_else(|| Error::Invalid {
            op,
            msg: "empty kernel".into(),
        });
    }
    let patches = windows(&xp, &kernel, stride, dilation, &out)?; // (N, out..., KK, C_in)
    let y = if groups == 1 {
        let a = ops::reshape(&patches, &[m, kk * c_in])?;
        let wm = ops::reshape(w, &[c_out, kk * c_in])?;
        ops::matmul(&a, &ops::transpose(&wm, None)?)?
    } else {
        let og = c_out / groups;
        let a = ops::reshape(&patches, &[m, kk, groups, cg])?;
        let a = ops::reshape(
            &ops::transpose(&a, Some(&[2, 0, 1, 3]))?,
            &[groups, m, kk * cg],
        )?;
        let wm = ops::transpose(&ops::reshape(w, &[groups, og, kk * cg])?, Some(&[0, 2, 1]))?;
        let y = ops::matmul(&a, &wm)?; // (G, M, C_out / G)
        ops::reshape(&ops::transpose(&y, Some(&[1, 0, 2]))?, &[m, c_out])?
    };
    let mut shape = Vec::with_capacity(D + 2);
    shape.push(n);
    shape.extend_from_slice(&out);
    shape.push(c_out);
    ops::reshape(&y, &shape)
}

/// Checks ranks, groups and channel counts shared by convolutions and transposed ones.
fn check_conv_args<const D: usize>(
    op: &'static str,
    x: &Array,
    w: &Array,
    stride: &[usize; D],
    dilation: &[usize; D],
    groups: usize,
) -> Result<()> {
    if D == 0 {
        return invalid(op, "needs at least one spatial dimension");
    }
    if x.ndim() != D + 2 {
        return invalid(
            op,
            format!(
                "the input must be {}, got shape {}",
                input_layout(D),
                fmt_shape(x.shape())
            ),
        );
    }
    if w.ndim() != D + 2 {
        return invalid(
            op,
            format!(
                "the weight must be {}, got shape {}",
                weight_layout(D),
                fmt_shape(w.shape())
            ),
        );
    }
    check_positive(op, "stride", stride)?;
    check_positive(op, "dilation", dilation)?;
    if groups == 0 {
        return invalid(op, "groups must be at least 1");
    }
    if w.shape()[1..=D].contains(&0) {
        return invalid(
            op,
            format!("empty kernel in weight {}", fmt_shape(w.shape())),
        );
    }
    let (c_in, c_out, cg) = (x.shape()[D + 1], w.shape()[0], w.shape()[D + 1]);
    if !c_in.is_multiple_of(groups) || !c_out.is_multiple_of(groups) {
        return invalid(
            op,
            format!(
                "input channels ({c_in}) and output channels ({c_out}) must be divisible by \
                 groups ({groups}); input {}, weight {}",
                fmt_shape(x.shape()),
                fmt_shape(w.shape())
            ),
        );
    }
    if cg * groups != c_in {
        return invalid(
            op,
            format!(
                "the input {} has {c_in} channels but the weight {} takes {cg} per group x \
                 {groups} groups",
                fmt_shape(x.shape()),
                fmt_shape(w.shape())
            ),
        );
    }
    Ok(())
}

/// Convolution over `D` spatial dims (cross-correlation, as every framework): `x` is
/// (N, S..., C_in), `weight` (C_out, K..., C_in / groups); the output is (N, O..., C_out) with
/// `O = (S + 2 * padding - dilation * (K - 1) - 1) / stride + 1`. Input channel group `g`
/// (`C_in / groups` consecutive channels) feeds output channels `g * C_out / groups ..`.
/// `Err` for wrong ranks, zero stride/dilation/groups, channels that do not divide into the
/// groups or do not match the weight, or a kernel larger than the padded input.
pub fn conv_nd<const D: usize>(
    x: &Array,
    weight: &Array,
    stride: [usize; D],
    padding: [usize; D],
    dilation: [usize; D],
    groups: usize,
) -> Result<Array> {
    let op = conv_name(D);
    check_conv_args(op, x, weight, &stride, &dilation, groups)?;
    conv_core(
        op, x, weight, &stride, &padding, &padding, &dilation, groups,
    )
}

/// 1-d convolution: `x` (N, L, C_in), `weight` (C_out, K, C_in / groups) → (N, L_out, C_out),
/// `L_out = (L + 2 * padding - dilation * (K - 1) - 1) / stride + 1`. No bias (add it, or use
/// [`Conv1d`]). MLX's `mx.conv1d`; errors as [`conv_nd`].
/// ```
/// use tessera_core::{Array, ops};
/// use tessera_nn::conv::conv1d;
/// let x = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[1, 4, 1]).unwrap();
/// let w = Array::from_slice(&[1.0f32, -1.0], &[1, 2, 1]).unwrap();
/// let y = conv1d(&x, &w, 1, 0, 1, 1).unwrap();
/// assert_eq!(y.shape(), &[1, 3, 1]);
/// assert_eq!(y.to_vec::<f32>().unwrap(), vec![-1.0, -1.0, -1.0]);
/// ```
pub fn conv1d(
    x: &Array,
    weight: &Array,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Result<Array> {
    conv_nd(x, weight, [stride], [padding], [dilation], groups)
}

/// 2-d convolution: `x` (N, H, W, C_in), `weight` (C_out, KH, KW, C_in / groups) →
/// (N, H_out, W_out, C_out). `stride`, `padding`, `dilation` take one number or `(h, w)`. No
/// bias (add it, or use [`Conv2d`]). MLX's `mx.conv2d`; errors as [`conv_nd`].
/// ```
/// use tessera_core::{Dtype, ops};
/// use tessera_nn::conv::conv2d;
/// let x = ops::ones(&[2, 5, 5, 3], Dtype::F32).unwrap();
/// let w = ops::ones(&[4, 3, 3, 3], Dtype::F32).unwrap();
/// let y = conv2d(&x, &w, 2, 1, 1, 1).unwrap();
/// assert_eq!(y.shape(), &[2, 3, 3, 4]);
/// assert!(conv2d(&x, &ops::ones(&[4, 3, 3, 2], Dtype::F32).unwrap(), 1, 0, 1, 1).is_err());
/// ```
pub fn conv2d(
    x: &Array,
    weight: &Array,
    stride: impl Into<Dims<2>>,
    padding: impl Into<Dims<2>>,
    dilation: impl Into<Dims<2>>,
    groups: usize,
) -> Result<Array> {
    conv_nd(
        x,
        weight,
        stride.into().0,
        padding.into().0,
        dilation.into().0,
        groups,
    )
}

/// Inserts `s - 1` zeros between the elements of `axis`: length `L` becomes `(L - 1) * s + 1`.
fn insert_zeros(x: &Array, axis: usize, s: usize) -> Result<Array> {
    let len = x.shape()[axis];
    let e = ops::expand_dims(x, &[(axis + 1) as isize])?;
    let mut widths = vec![(0, 0); e.ndim()];
    widths[axis + 1] = (0, s - 1);
    let p = ops::pad(&e, &widths, PadMode::Constant(0.0))?;
    let mut shape = x.shape().to_vec();
    shape[axis] = len * s;
    let r = ops::reshape(&p, &shape)?;
    ops::slice_axis(&r, axis, 0, (len - 1) * s + 1)
}

/// Transposed convolution over `D` spatial dims (the gradient of [`conv_nd`] with respect to
/// its input): `x` (N, S..., C_in), `weight` (C_out, K..., C_in / groups) (MLX's layout), output
/// (N, O..., C_out) with `O = (S - 1) * stride - 2 * padding + dilation * (K - 1) +
/// output_padding + 1`, as PyTorch's `conv_transpose*d`. `Err` as [`conv_nd`], and for
/// `output_padding >= max(stride, dilation)`, an empty spatial input, or an output size below 1.
pub fn conv_transpose_nd<const D: usize>(
    x: &Array,
    weight: &Array,
    stride: [usize; D],
    padding: [usize; D],
    dilation: [usize; D],
    output_padding: [usize; D],
    groups: usize,
) -> Result<Array> {
    let op = conv_transpose_name(D);
    check_conv_args(op, x, weight, &stride, &dilation, groups)?;
    let mut lo = [0usize; D];
    let mut hi = [0usize; D];
    let mut crop_lo = [0usize; D];
    let mut crop_hi = [0usize; D];
    for i in 0..D {
        if output_padding[i] >= stride[i].max(dilation[i]) {
            return invalid(
                op,
                format!(
                    "output_padding must be smaller than stride or dilation, got \
                     output_padding {output_padding:?}, stride {stride:?}, dilation {dilation:?}"
                ),
            );
        }
        let s = x.shape()[1 + i];
        if s == 0 {
            return invalid(
                op,
                format!("empty spatial axis {i} in input {}", fmt_shape(x.shape())),
            );
        }
        let k = weight.shape()[1 + i];
        let edge = (dilation[i] * (k - 1)) as isize - padding[i] as isize;
        let out = ((s - 1) * stride[i]) as isize + 1 + 2 * edge + output_padding[i] as isize
            - (dilation[i] * (k - 1)) as isize;
        if out < 1 {
            return invalid(
                op,
                format!(
                    "output size {out} on spatial axis {i} (input {}, weight {}, stride {}, \
                     padding {}, dilation {}, output_padding {})",
                    fmt_shape(x.shape()),
                    fmt_shape(weight.shape()),
                    stride[i],
                    padding[i],
                    dilation[i],
                    output_padding[i]
                ),
            );
        }
        let edge_hi = edge + output_padding[i] as isize;
        lo[i] = edge.max(0) as usize;
        hi[i] = edge_hi.max(0) as usize;
        crop_lo[i] = (-edge).max(0) as usize;
        crop_hi[i] = (-edge_hi).max(0) as usize;
    }
    let mut xd = x.clone();
    for (i, &s) in stride.iter().enumerate() {
        if s > 1 {
            xd = insert_zeros(&xd, 1 + i, s)?;
        }
    }
    // Pad first, then crop: with a large output_padding the crop can reach into the padding.
    xd = pad_spatial(&xd, &lo, &hi, 0.0)?;
    for i in 0..D {
        if crop_lo[i] > 0 || crop_hi[i] > 0 {
            let len = xd.shape()[1 + i];
            xd = ops::slice_axis(&xd, 1 + i, crop_lo[i], len - crop_hi[i])?;
        }
    }
    let mut flip = vec![(None, None, 1isize)];
    flip.extend(std::iter::repeat_n((None, None, -1isize), D));
    let wf = ops::slice_opt(weight, &flip)?;
    conv_core(op, &xd, &wf, &[1; D], &[0; D], &[0; D], &dilation, groups)
}

/// 1-d transposed convolution: `x` (N, L, C_in), `weight` (C_out, K, C_in / groups) →
/// (N, L_out, C_out), `L_out = (L - 1) * stride - 2 * padding + dilation * (K - 1) +
/// output_padding + 1`. No bias. MLX's `mx.conv_transpose1d`; errors as
/// [`conv_transpose_nd`].
/// ```
/// use tessera_core::Array;
/// use tessera_nn::conv::conv_transpose1d;
/// let x = Array::from_slice(&[1.0f32, 2.0], &[1, 2, 1]).unwrap();
/// let w = Array::from_slice(&[1.0f32, 10.0], &[1, 2, 1]).unwrap();
/// let y = conv_transpose1d(&x, &w, 2, 0, 1, 0, 1).unwrap();
/// assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0, 10.0, 2.0, 20.0]);
/// ```
pub fn conv_transpose1d(
    x: &Array,
    weight: &Array,
    stride: usize,
    padding: usize,
    dilation: usize,
    output_padding: usize,
    groups: usize,
) -> Result<Array> {
    conv_transpose_nd(
        x,
        weight,
        [stride],
        [padding],
        [dilation],
        [output_padding],
        groups,
    )
}

/// 2-d transposed convolution: `x` (N, H, W, C_in), `weight` (C_out, KH, KW, C_in / groups) →
/// (N, H_out, W_out, C_out); sizes as [`conv_transpose1d`] per axis. `stride`, `padding`,
/// `dilation`, `output_padding` take one number or `(h, w)`. No bias. MLX's
/// `mx.conv_transpose2d`; errors as [`conv_transpose_nd`].
pub fn conv_transpose2d(
    x: &Array,
    weight: &Array,
    stride: impl Into<Dims<2>>,
    padding: impl Into<Dims<2>>,
    dilation: impl Into<Dims<2>>,
    output_padding: impl Into<Dims<2>>,
    groups: usize,
) -> Result<Array> {
    conv_transpose_nd(
        x,
        weight,
        stride.into().0,
        padding.into().0,
        dilation.into().0,
        output_padding.into().0,
        groups,
    )
}

/// A PyTorch `Conv{1,2,3}d` weight (C_out, C_in / groups, K...) in this crate's layout
/// (C_out, K..., C_in / groups): axis 1 moved to the end (a view). `Err` below 3 dims.
pub fn conv_weight_from_pytorch(w: &Array) -> Result<Array> {
    if w.ndim() < 3 {
        return invalid(
            "conv_weight_from_pytorch",
            format!(
                "expected (C_out, C_in / groups, K...), got {}",
                fmt_shape(w.shape())
            ),
        );
    }
    ops::moveaxis(w, 1, -1)
}

/// A PyTorch `ConvTranspose{1,2,3}d` weight (C_in, C_out / groups, K...) in this crate's layout
/// (C_out, K..., C_in / groups). `Err` below 3 dims or if `groups` does not divide C_in.
pub fn conv_transpose_weight_from_pytorch(w: &Array, groups: usize) -> Result<Array> {
    let op = "conv_transpose_weight_from_pytorch";
    if w.ndim() < 3 || groups == 0 || !w.shape()[0].is_multiple_of(groups) {
        return invalid(
            op,
            format!(
                "expected (C_in, C_out / groups, K...) with C_in divisible by groups ({groups}), \
                 got {}",
                fmt_shape(w.shape())
            ),
        );
    }
    let d = w.ndim() - 2;
    let (c_in, og) = (w.shape()[0], w.shape()[1]);
    let mut shape = vec![groups, c_in / groups, og];
    shape.extend_from_slice(&w.shape()[2..]);
    let g = ops::reshape(w, &shape)?;
    // (G, C_in/G, C_out/G, K...) -> (G, C_out/G, K..., C_in/G)
    let mut perm: Vec<isize> = vec![0, 2];
    perm.extend((0..d).map(|i| (3 + i) as isize));
    perm.push(1);
    let t = ops::transpose(&g, Some(&perm))?;
    let mut out = vec![groups * og];
    out.extend_from_slice(&w.shape()[2..]);
    out.push(c_in / groups);
    ops::reshape(&t, &out)
}

/// Hyper-parameters of [`Conv`]: `stride`, `padding`, `dilation` per spatial dim, `groups`.
/// Defaults: 1, 0, 1, 1; set them with the builder methods.
/// ```
/// use tessera_nn::conv::ConvOptions;
/// let o = ConvOptions::<2>::default().stride(2).padding((1, 0)).groups(4);
/// assert_eq!((o.stride, o.padding, o.groups), ([2, 2], [1, 0], 4));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions<const D: usize> {
    pub stride: [usize; D],
    pub padding: [usize; D],
    pub dilation: [usize; D],
    pub groups: usize,
    /// Only for transposed convolutions: extra size at the end of each output axis.
    pub output_padding: [usize; D],
}

impl<const D: usize> Default for ConvOptions<D> {
    fn default() -> Self {
        ConvOptions {
            stride: [1; D],
            padding: [0; D],
            dilation: [1; D],
            groups: 1,
            output_padding: [0; D],
        }
    }
}

impl<const D: usize> ConvOptions<D> {
    pub fn stride(mut self, v: impl Into<Dims<D>>) -> Self {
        self.stride = v.into().0;
        self
    }
    pub fn padding(mut self, v: impl Into<Dims<D>>) -> Self {
        self.padding = v.into().0;
        self
    }
    pub fn dilation(mut self, v: impl Into<Dims<D>>) -> Self {
        self.dilation = v.into().0;
        self
    }
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    /// Only for transposed convolutions.
    pub fn output_padding(mut self, v: impl Into<Dims<D>>) -> Self {
        self.output_padding = v.into().0;
        self
    }
}

/// Checked, PyTorch-initialised parameters of a (transposed) convolution layer: the weight
/// (C_out, K..., C_in / groups) and the optional bias. PyTorch's fan-in is C_in / groups * prod(K)
/// for a convolution and C_out / groups * prod(K) for a transposed one (its weight is stored the
/// other way round).
#[allow(clippy::too_many_arguments)]
fn new_params<const D: usize>(
    op: &'static str,
    in_channels: usize,
    out_channels: usize,
    kernel: &[usize; D],
    bias: bool,
    groups: usize,
    transposed: bool,
    key: &Array,
) -> Result<(Array, Option<Array>)> {
    check_positive(op, "kernel_size", kernel)?;
    check_channels(op, in_channels, out_channels, groups)?;
    let cg = in_channels / groups;
    let mut shape = vec![out_channels];
    shape.extend_from_slice(kernel);
    shape.push(cg);
    let fan_channels = if transposed {
        out_channels / groups
    } else {
        cg
    };
    let fan_in = fan_channels * kernel.iter().product::<usize>();
    init_params(&shape, out_channels, fan_in, bias, key)
}

/// PyTorch's default initialisation: uniform in ±1/sqrt(fan_in) for the weight and the bias.
fn init_params(
    shape: &[usize],
    c_out: usize,
    fan_in: usize,
    bias: bool,
    key: &Array,
) -> Result<(Array, Option<Array>)> {
    let keys = random::split(key, 2)?;
    let k = |i: usize| ops::reshape(&ops::slice_axis(&keys, 0, i, i + 1)?, &[2]);
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    let weight = random::uniform(-bound, bound, shape, Dtype::F32, Some(&k(0)?))?;
    let bias = if bias {
        Some(random::uniform(
            -bound,
            bound,
            &[c_out],
            Dtype::F32,
            Some(&k(1)?),
        )?)
    } else {
        None
    };
    Ok((weight, bias))
}

fn conv_params(weight: &Array, bias: &Option<Array>) -> Params {
    let mut p = Params::new();
    p.insert("weight".into(), weight.clone());
    if let Some(b) = bias {
        p.insert("bias".into(), b.clone());
    }
    p
}

fn load_conv_params(weight: &mut Array, bias: &mut Option<Array>, params: &Params) -> Result<()> {
    for (name, v) in params {
        let slot = match name.as_str() {
            "weight" => Some(&mut *weight),
            "bias" => bias.as_mut(),
            _ => None,
        };
        let slot = slot.ok_or_else(|| Error::Invalid {
            op: "load_parameters",
            msg: format!("no parameter named {name}"),
        })?;
        check_replacement(name, slot, v)?;
        *slot = v.clone();
    }
    Ok(())
}

fn check_bias(op: &'static str, weight: &Array, bias: &Option<Array>) -> Result<()> {
    if let Some(b) = bias
        && b.shape() != [weight.shape()[0]]
    {
        return invalid(
            op,
            format!(
                "the bias must be (C_out,) = ({},), got {}",
                weight.shape()[0],
                fmt_shape(b.shape())
            ),
        );
    }
    Ok(())
}

fn add_bias(y: Array, bias: &Option<Array>) -> Result<Array> {
    match bias {
        Some(b) => ops::add(&y, b),
        None => Ok(y),
    }
}

/// A convolution layer over `D` spatial dims ([`Conv1d`], [`Conv2d`]): `weight`
/// (C_out, K..., C_in / groups), optional `bias` (C_out,); channels-last input, see the module
/// documentation for the layout and for loading PyTorch weights.
#[derive(Clone)]
pub struct Conv<const D: usize> {
    pub weight: Array,
    pub bias: Option<Array>,
    pub options: ConvOptions<D>,
}

/// 1-d convolution layer: (N, L, C_in) → (N, L_out, C_out).
pub type Conv1d = Conv<1>;
/// 2-d convolution layer: (N, H, W, C_in) → (N, H_out, W_out, C_out).
pub type Conv2d = Conv<2>;

fn check_channels(op: &'static str, c_in: usize, c_out: usize, groups: usize) -> Result<()> {
    if groups == 0 || !c_in.is_multiple_of(groups) || !c_out.is_multiple_of(groups) {
        return invalid(
            op,
            format!(
                "in_channels ({c_in}) and out_channels ({c_out}) must be divisible by groups \
                 ({groups})"
            ),
        );
    }
    Ok(())
}

impl<const D: usize> Conv<D> {
    /// A layer with PyTorch's initialisation (uniform in ±1/sqrt(C_in / groups * prod(K))).
    /// `Err` if the channels do not divide into `options.groups` or the kernel is empty.
    /// ```
    /// use tessera_core::{Dtype, ops, random};
    /// use tessera_nn::{Module, conv::{Conv2d, ConvOptions}};
    /// let conv = Conv2d::new(3, 8, 3, true, ConvOptions::default().padding(1), &random::key(0)).unwrap();
    /// assert_eq!(conv.weight.shape(), &[8, 3, 3, 3]);
    /// let y = conv.forward(&ops::zeros(&[2, 16, 16, 3], Dtype::F32).unwrap()).unwrap();
    /// assert_eq!(y.shape(), &[2, 16, 16, 8]);
    /// ```
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Into<Dims<D>>,
        bias: bool,
        options: ConvOptions<D>,
        key: &Array,
    ) -> Result<Self> {
        let (weight, bias) = new_params(
            conv_name(D),
            in_channels,
            out_channels,
            &kernel_size.into().0,
            bias,
            options.groups,
            false,
            key,
        )?;
        Ok(Conv {
            weight,
            bias,
            options,
        })
    }

    /// A layer from existing parameters (in this crate's layout). `Err` if the weight is not
    /// (C_out, K..., C_in / groups) with C_out divisible by the groups, or the bias not (C_out,).
    pub fn from_weights(
        weight: Array,
        bias: Option<Array>,
        options: ConvOptions<D>,
    ) -> Result<Self> {
        let op = conv_name(D);
        if weight.ndim() != D + 2
            || options.groups == 0
            || !weight.shape()[0].is_multiple_of(options.groups)
        {
            return invalid(
                op,
                format!(
                    "the weight must be {} with C_out divisible by groups ({}), got {}",
                    weight_layout(D),
                    options.groups,
                    fmt_shape(weight.shape())
                ),
            );
        }
        check_bias(op, &weight, &bias)?;
        Ok(Conv {
            weight,
            bias,
            options,
        })
    }
}

impl<const D: usize> Module for Conv<D> {
    fn parameters(&self) -> Params {
        conv_params(&self.weight, &self.bias)
    }

    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        load_conv_params(&mut self.weight, &mut self.bias, params)
    }

    fn forward(&self, x: &Array) -> Result<Array> {
        let o = &self.options;
        if o.output_padding.iter().any(|&p| p != 0) {
            return invalid(
                conv_name(D),
                format!(
                    "output_padding ({:?}) applies only to transposed convolutions",
                    o.output_padding
                ),
            );
        }
        let y = conv_nd(x, &self.weight, o.stride, o.padding, o.dilation, o.groups)?;
        add_bias(y, &self.bias)
    }
}

/// A transposed convolution layer over `D` spatial dims ([`ConvTranspose1d`],
/// [`ConvTranspose2d`]): `weight` (C_out, K..., C_in / groups) (MLX's layout; PyTorch's
/// (C_in, C_out / groups, K...) converts with [`conv_transpose_weight_from_pytorch`]), optional
/// `bias` (C_out,).
#[derive(Clone)]
pub struct ConvTranspose<const D: usize> {
    pub weight: Array,
    pub bias: Option<Array>,
    pub options: ConvOptions<D>,
}

/// 1-d transposed convolution layer: (N, L, C_in) → (N, L_out, C_out).
pub type ConvTranspose1d = ConvTranspose<1>;
/// 2-d transposed convolution layer: (N, H, W, C_in) → (N, H_out, W_out, C_out).
pub type ConvTranspose2d = ConvTranspose<2>;

impl<const D: usize> ConvTranspose<D> {
    /// A layer with PyTorch's initialisation (uniform in ±1/sqrt(C_out / groups * prod(K)),
    /// PyTorch's fan-in for its transposed weight). `Err` as [`Conv::new`].
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Into<Dims<D>>,
        bias: bool,
        options: ConvOptions<D>,
        key: &Array,
    ) -> Result<Self> {
        let (weight, bias) = new_params(
            conv_transpose_name(D),
            in_channels,
            out_channels,
            &kernel_size.into().0,
            bias,
            options.groups,
            true,
            key,
        )?;
        Ok(ConvTranspose {
            weight,
            bias,
            options,
        })
    }

    /// A layer from existing parameters (in this crate's layout). `Err` as [`Conv::from_weights`].
    pub fn from_weights(
        weight: Array,
        bias: Option<Array>,
        options: ConvOptions<D>,
    ) -> Result<Self> {
        let c = Conv::<D>::from_weights(weight, bias, options)?;
        Ok(ConvTranspose {
            weight: c.weight,
            bias: c.bias,
            options,
        })
    }
}

impl<const D: usize> Module for ConvTranspose<D> {
    fn parameters(&self) -> Params {
        conv_params(&self.weight, &self.bias)
    }

    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        load_conv_params(&mut self.weight, &mut self.bias, params)
    }

    fn forward(&self, x: &Array) -> Result<Array> {
        let o = &self.options;
        let y = conv_transpose_nd(
            x,
            &self.weight,
            o.stride,
            o.padding,
            o.dilation,
            o.output_padding,
            o.groups,
        )?;
        add_bias(y, &self.bias)
    }
}
