//! Losses (mean over the batch, as PyTorch's default `reduction="mean"`).

use tessera_core::ops::{self, Axes};
use tessera_core::{Array, Error, Result};

/// Mean squared error.
pub fn mse_loss(pred: &Array, target: &Array) -> Result<Array> {
    ops::mean(
        &ops::square(&ops::subtract(pred, target)?)?,
        Axes::All,
        false,
    )
}

/// Cross entropy of `logits` (batch, classes) against integer class indices (batch,):
/// `mean(logsumexp(logits) - logits[target])`, with optional label smoothing as PyTorch's.
pub fn cross_entropy(logits: &Array, targets: &Array, label_smoothing: f64) -> Result<Array> {
    if logits.ndim() != 2 || targets.ndim() != 1 || targets.shape()[0] != logits.shape()[0] {
        return Err(Error::Invalid {
            op: "cross_entropy",
            msg: format!(
                "logits {:?} need shape (batch, classes) and targets {:?} shape (batch,)",
                logits.shape(),
                targets.shape()
            ),
        });
    }
    let logp = ops::log_softmax(logits, -1)?;
    let idx = ops::expand_dims(targets, &[1])?;
    let nll = ops::negative(&ops::squeeze(
        &ops::take_along_axis(&logp, &idx, Some(1))?,
        1,
    )?)?;
    let per = if label_smoothing > 0.0 {
        let smooth = ops::negative(&ops::mean(&logp, 1, false)?)?;
        let a = Array::scalar_of(1.0 - label_smoothing, nll.dtype());
        let b = Array::scalar_of(label_smoothing, nll.dtype());
        ops::add(&ops::multiply(&nll, &a)?, &ops::multiply(&smooth, &b)?)?
    } else {
        nll
    };
    ops::mean(&per, Axes::All, false)
}
