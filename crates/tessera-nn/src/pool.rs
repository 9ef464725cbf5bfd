//! Pooling: [`max_pool1d`], [`max_pool2d`], [`avg_pool1d`], [`avg_pool2d`] (and the
//! any-dimensional [`max_pool_nd`], [`avg_pool_nd`]), and the parameterless layers
//! [`MaxPool1d`], [`MaxPool2d`], [`AvgPool1d`], [`AvgPool2d`].
//!
//! Channels last, as MLX: (N, L, C) / (N, H, W, C) → (N, L_out, C) / (N, H_out, W_out, C) with
//! `out = (size + 2 * padding - kernel) / stride + 1` (floor; PyTorch's `ceil_mode=False`).
//! Max pooling pads with -inf (the dtype's minimum for integers); average pooling pads with
//! zeros and, as PyTorch's default `count_include_pad=True` and MLX, divides by the kernel size,
//! or by the number of non-padding elements with `count_include_pad = false`. PyTorch requires
//! `padding <= kernel / 2`; so do these.
//!
//! Written as composites (strided slices of the padded input stacked to
//! (N, out..., prod(kernel), C), then a `max` or `mean` over the window axis), so gradients,
//! `vmap` and `compile` come from the core. The gradient of max pooling splits evenly between
//! tied maxima of a window (PyTorch gives it all to one of them).

use crate::Module;
use crate::conv::{Dims, check_positive, fmt_shape, input_layout, invalid, pad_spatial, windows};
use tessera_core::transforms::Params;
use tessera_core::{Array, Error, Result, ops};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Max,
    Avg { count_include_pad: bool },
}

fn pool_name(kind: Kind, d: usize) -> &'static str {
    match (kind, d) {
        (Kind::Max, 1) => "max_pool1d",
        (Kind::Max, 2) => "max_pool2d",
        (Kind::Max, 3) => "max_pool3d",
        (Kind::Max, _) => "max_pool",
        (Kind::Avg { .. }, 1) => "avg_pool1d",
        (Kind::Avg { .. }, 2) => "avg_pool2d",
        (Kind::Avg { .. }, 3) => "avg_pool3d",
        (Kind::Avg { .. }, _) => "avg_pool",
    }
}

fn pool<const D: usize>(
    kind: Kind,
    x: &Array,
    kernel: [usize; D],
    stride: [usize; D],
    padding: [usize; D],
) -> Result<Array> {
    let op = pool_name(kind, D);
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
    check_positive(op, "kernel_size", &kernel)?;
    check_positive(op, "stride", &stride)?;
    let mut out = [0usize; D];
    for i in 0..D {
        if 2 * padding[i] > kernel[i] {
            return invalid(
                op,
                format!(
                    "padding must be at most half the kernel size, got padding {padding:?} for \
                     kernel {kernel:?}"
                ),
            );
        }
        let padded = x.shape()[1 + i] + 2 * padding[i];
        if padded < kernel[i] {
            return invalid(
                op,
                format!(
                    "kernel {kernel:?} larger than the padded input on spatial axis {i} (input {}, \
                     padding {padding:?})",
                    fmt_shape(x.shape())
                ),
            );
        }
        out[i] = (padded - kernel[i]) / stride[i] + 1;
    }
    let ones = [1usize; D];
    let axis = (D + 1) as isize;
    match kind {
        Kind::Max => {
            let xp = pad_spatial(x, &padding, &padding, f64::NEG_INFINITY)?;
            let w = windows(&xp, &kernel, &stride, &ones, &out)?;
            ops::max(&w, axis, false)
        }
        Kind::Avg { count_include_pad } => {
            let xp = pad_spatial(x, &padding, &padding, 0.0)?;
            let w = windows(&xp, &kernel, &stride, &ones, &out)?;
            if count_include_pad || padding.iter().all(|&p| p == 0) {
                return ops::mean(&w, axis, false);
            }
            // Divide by the number of real elements in each window: the same windows over ones.
            let dt = x.dtype().at_least_float();
            let mut shape = vec![1usize; D + 2];
            shape[1..=D].copy_from_slice(&x.shape()[1..=D]);
            let ones_p = pad_spatial(&ops::ones(&shape, dt)?, &padding, &padding, 0.0)?;
            let counts = ops::sum(
                &windows(&ones_p, &kernel, &stride, &[1; D], &out)?,
                axis,
                false,
            )?;
            ops::divide(&ops::sum(&w.astype(dt)?, axis, false)?, &counts)
        }
    }
}

/// Max pooling over `D` spatial dims of a channels-last input (N, S..., C): the maximum of each
/// `kernel` window, windows `stride` apart, the input padded by `padding` with -inf. `Err` for a
/// wrong rank, a zero kernel or stride, `padding > kernel / 2`, or a kernel larger than the
/// padded input.
pub fn max_pool_nd<const D: usize>(
    x: &Array,
    kernel: [usize; D],
    stride: [usize; D],
    padding: [usize; D],
) -> Result<Array> {
    pool(Kind::Max, x, kernel, stride, padding)
}

/// Average pooling over `D` spatial dims (see the module documentation for the padding and
/// `count_include_pad`); errors as [`max_pool_nd`].
pub fn avg_pool_nd<const D: usize>(
    x: &Array,
    kernel: [usize; D],
    stride: [usize; D],
    padding: [usize; D],
    count_include_pad: bool,
) -> Result<Array> {
    pool(Kind::Avg { count_include_pad }, x, kernel, stride, padding)
}

/// 1-d max pooling: (N, L, C) → (N, (L + 2 * padding - kernel) / stride + 1, C).
/// ```
/// use tessera_core::Array;
/// use tessera_nn::pool::max_pool1d;
/// let x = Array::from_slice(&[1.0f32, 3.0, 2.0, 5.0, 4.0], &[1, 5, 1]).unwrap();
/// assert_eq!(max_pool1d(&x, 2, 2, 0).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 5.0]);
/// assert_eq!(max_pool1d(&x, 3, 2, 1).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 5.0, 5.0]);
/// ```
pub fn max_pool1d(x: &Array, kernel: usize, stride: usize, padding: usize) -> Result<Array> {
    max_pool_nd(x, [kernel], [stride], [padding])
}

/// 2-d max pooling: (N, H, W, C) → (N, H_out, W_out, C); each argument one number or `(h, w)`.
pub fn max_pool2d(
    x: &Array,
    kernel: impl Into<Dims<2>>,
    stride: impl Into<Dims<2>>,
    padding: impl Into<Dims<2>>,
) -> Result<Array> {
    max_pool_nd(x, kernel.into().0, stride.into().0, padding.into().0)
}

/// 1-d average pooling: (N, L, C) → (N, (L + 2 * padding - kernel) / stride + 1, C).
/// ```
/// use tessera_core::Array;
/// use tessera_nn::pool::avg_pool1d;
/// let x = Array::from_slice(&[1.0f32, 3.0, 2.0, 6.0], &[1, 4, 1]).unwrap();
/// assert_eq!(avg_pool1d(&x, 2, 2, 0, true).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
/// assert_eq!(avg_pool1d(&x, 2, 2, 1, true).unwrap().to_vec::<f32>().unwrap(), vec![0.5, 2.5, 3.0]);
/// assert_eq!(avg_pool1d(&x, 2, 2, 1, false).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.5, 6.0]);
/// ```
pub fn avg_pool1d(
    x: &Array,
    kernel: usize,
    stride: usize,
    padding: usize,
    count_include_pad: bool,
) -> Result<Array> {
    avg_pool_nd(x, [kernel], [stride], [padding], count_include_pad)
}

/// 2-d average pooling: (N, H, W, C) → (N, H_out, W_out, C); each size one number or `(h, w)`.
pub fn avg_pool2d(
    x: &Array,
    kernel: impl Into<Dims<2>>,
    stride: impl Into<Dims<2>>,
    padding: impl Into<Dims<2>>,
    count_include_pad: bool,
) -> Result<Array> {
    avg_pool_nd(
        x,
        kernel.into().0,
        stride.into().0,
        padding.into().0,
        count_include_pad,
    )
}

fn no_parameters(params: &Params) -> Result<()> {
    match params.keys().next() {
        Some(name) => Err(Error::Invalid {
            op: "load_parameters",
            msg: format!("no parameter named {name} (pooling has no parameters)"),
        }),
        None => Ok(()),
    }
}

/// Max pooling layer over `D` spatial dims ([`MaxPool1d`], [`MaxPool2d`]). `new(kernel)` uses
/// stride = kernel and no padding, as PyTorch and MLX.
/// ```
/// use tessera_core::{Dtype, ops};
/// use tessera_nn::{Module, pool::MaxPool2d};
/// let pool = MaxPool2d::new(3).stride(2).padding(1);
/// let y = pool.forward(&ops::zeros(&[1, 8, 8, 4], Dtype::F32).unwrap()).unwrap();
/// assert_eq!(y.shape(), &[1, 4, 4, 4]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool<const D: usize> {
    pub kernel_size: [usize; D],
    pub stride: [usize; D],
    pub padding: [usize; D],
}

/// 1-d max pooling layer.
pub type MaxPool1d = MaxPool<1>;
/// 2-d max pooling layer.
pub type MaxPool2d = MaxPool<2>;

impl<const D: usize> MaxPool<D> {
    pub fn new(kernel_size: impl Into<Dims<D>>) -> Self {
        let k = kernel_size.into().0;
        MaxPool {
            kernel_size: k,
            stride: k,
            padding: [0; D],
        }
    }
    pub fn stride(mut self, v: impl Into<Dims<D>>) -> Self {
        self.stride = v.into().0;
        self
    }
    pub fn padding(mut self, v: impl Into<Dims<D>>) -> Self {
        self.padding = v.into().0;
        self
    }
}

impl<const D: usize> Module for MaxPool<D> {
    fn parameters(&self) -> Params {
        Params::new()
    }
    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        no_parameters(params)
    }
    fn forward(&self, x: &Array) -> Result<Array> {
        max_pool_nd(x, self.kernel_size, self.stride, self.padding)
    }
}

/// Average pooling layer over `D` spatial dims ([`AvgPool1d`], [`AvgPool2d`]). `new(kernel)`
/// uses stride = kernel, no padding and `count_include_pad = true`, as PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool<const D: usize> {
    pub kernel_size: [usize; D],
    pub stride: [usize; D],
    pub padding: [usize; D],
    pub count_include_pad: bool,
}

/// 1-d average pooling layer.
pub type AvgPool1d = AvgPool<1>;
/// 2-d average pooling layer.
pub type AvgPool2d = AvgPool<2>;

impl<const D: usize> AvgPool<D> {
    pub fn new(kernel_size: impl Into<Dims<D>>) -> Self {
        let k = kernel_size.into().0;
        AvgPool {
            kernel_size: k,
            stride: k,
            padding: [0; D],
            count_include_pad: true,
        }
    }
    pub fn stride(mut self, v: impl Into<Dims<D>>) -> Self {
        self.stride = v.into().0;
        self
    }
    pub fn padding(mut self, v: impl Into<Dims<D>>) -> Self {
        self.padding = v.into().0;
        self
    }
    pub fn count_include_pad(mut self, v: bool) -> Self {
        self.count_include_pad = v;
        self
    }
}

impl<const D: usize> Module for AvgPool<D> {
    fn parameters(&self) -> Params {
        Params::new()
    }
    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        no_parameters(params)
    }
    fn forward(&self, x: &Array) -> Result<Array> {
        avg_pool_nd(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.count_include_pad,
        )
    }
}
