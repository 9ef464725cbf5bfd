//! The synthetic task of the cluster examples: inputs are standard normal, labels the argmax of
//! a fixed random linear map of the input (the "teacher", the same on every rank).

use tessera::{Array, Dtype, ops, random};

/// The teacher map from `dim` inputs to `classes` labels (the same for every caller).
pub fn teacher(dim: usize, classes: usize) -> tessera::Result<Array> {
    random::normal(&[dim, classes], Dtype::F32, 0.0, 1.0, Some(&random::key(7)))
}

/// `batch` examples drawn with `seed`, and their labels under `teacher`.
pub fn batch(teacher: &Array, batch: usize, seed: u64) -> tessera::Result<(Array, Array)> {
    let dim = teacher.shape()[0];
    let x = random::normal(
        &[batch, dim],
        Dtype::F32,
        0.0,
        1.0,
        Some(&random::key(seed)),
    )?;
    let y = ops::argmax(&ops::matmul(&x, teacher)?, Some(-1), false)?.astype(Dtype::I32)?;
    Ok((x, y))
}
