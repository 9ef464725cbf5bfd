//! Pooling: [`max_pool1d`], [`max_pool2d`], [`avg_pool1d`], [`avg_pool2d`] (and the
//! any-dimensional [`max_pool_nd`], [`avg_pool_nd`]), and the parameterless layers
//! [`MaxPool1d`], [`MaxPool2d`], [`AvgPool1d`], [`AvgPool2d`], which also take PyTorch's
//! `dilation` (max), `ceil_mode` and `divisor_override` (average).
//!
//! Channels last, as MLX: (N, L, C) / (N, H, W, C) → (N, L_out, C) / (N, H_out, W_out, C).
//! The output size per axis is PyTorch's:
//! `out = floor_or_ceil((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1`, and
//! with `ceil_mode` one less when the last window would start at or past `size + padding` (every
//! window starts inside the input or the left padding); an output size below 1 is an error.
//! `ceil_mode` windows may run past the right padding; those positions count for nothing.
//!
//! Max pooling pads with -inf (the dtype's minimum for integers). Average pooling pads with
//! zeros and, as PyTorch's default `count_include_pad=True` and MLX, divides by the number of
//! window positions inside the padded input (the kernel size, except for `ceil_mode` windows
//! running past it), or by the number of input elements with `count_include_pad = false`, or by
//! `divisor_override`. PyTorch requires `padding <= kernel / 2` (the kernel size, not the
//! dilated extent); so do these.
//!
//! Written as composites (strided slices of the padded input stacked to
//! (N, out..., prod(kernel), C), then a `max` or `sum` over the window axis), so gradients,
//! `vmap` and `compile` come from the core. The gradient of max pooling splits evenly between
//! tied maxima of a window (PyTorch gives it all to one of them).

use crate::Module;
use crate::conv::{Dims, check_positive, fmt_shape, input_layout, invalid, pad_spatial, windows};
use tessera_core::transforms::Params;
use tessera_core::{Array, Error, Result, ops};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Max,
    Avg {
        count_include_pad: bool,
        divisor_override: Option<usize>,
    },
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

/// The window geometry of a pooling op.
#[derive(Clone, Copy)]
struct Geometry<const D: usize> {
    kernel: [usize; D],
    stride: [usize; D],
    padding: [usize; D],
    dilation: [usize; D],
    ceil_mode: bool,
}

/// PyTorch's `pooling_output_shape`: the number of windows along one axis (may be < 1).
fn output_size(
    size: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    ceil: bool,
) -> i64 {
    let (size, kernel, stride, pad, dilation) = (
        size as i64,
        kernel as i64,
        stride as i64,
        pad as i64,
        dilation as i64,
    );
    let span = size + 2 * pad - dilation * (kernel - 1) - 1 + if ceil { stride - 1 } else { 0 };
    let mut out = span.div_euclid(stride) + 1;
    // With ceil_mode the last window must start inside the input or the left padding.
    if ceil && (out - 1) * stride >= size + pad {
        out -= 1;
    }
    out
}

fn pool<const D: usize>(kind: Kind, x: &Array, g: Geometry<D>) -> Result<Array> {
    let op = pool_name(kind, D);
    let Geometry {
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
    } = g;
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
    check_positive(op, "dilation", &dilation)?;
    if let Kind::Avg {
        divisor_override: Some(0),
        ..
    } = kind
    {
        return invalid(op, "divisor_override must be at least 1, got 0");
    }
    let mut out = [0usize; D];
    // Padding after the input: `padding`, or more for ceil_mode windows running past it.
    let mut hi = padding;
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
        let size = x.shape()[1 + i];
        let o = output_size(
            size,
            kernel[i],
            stride[i],
            padding[i],
            dilation[i],
            ceil_mode,
        );
        if o < 1 {
            return invalid(
                op,
                format!(
                    "kernel {kernel:?} (dilation {dilation:?}) larger than the padded input on \
                     spatial axis {i} (input {}, padding {padding:?}): output size {o}",
                    fmt_shape(x.shape())
                ),
            );
        }
        out[i] = o as usize;
        let needed = (out[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1;
        hi[i] = hi[i].max(needed.saturating_sub(size + padding[i]));
    }
    let overhang = hi != padding;
    let axis = (D + 1) as isize;
    match kind {
        Kind::Max => {
            let xp = pad_spatial(x, &padding, &hi, f64::NEG_INFINITY)?;
            let w = windows(&xp, &kernel, &stride, &dilation, &out)?;
            ops::max(&w, axis, false)
        }
        Kind::Avg {
            count_include_pad,
            divisor_override,
        } => {
            let ones = [1usize; D];
            let xp = pad_spatial(x, &padding, &hi, 0.0)?;
            let w = windows(&xp, &kernel, &stride, &ones, &out)?;
            let dt = x.dtype().at_least_float();
            if let Some(d) = divisor_override {
                let s = ops::sum(&w.astype(dt)?, axis, false)?;
                return ops::divide(&s, &Array::scalar_of(d as f64, dt));
            }
            let no_pad = padding.iter().all(|&p| p == 0);
            if !overhang && (count_include_pad || no_pad) {
                return ops::mean(&w, axis, false);
            }
            // Divide by the number of counted positions in each window: the same windows over
            // an indicator of the counted region (the padded input, or the input alone).
            let mut shape = vec![1usize; D + 2];
            let mut lo = padding;
            for i in 0..D {
                shape[1 + i] = x.shape()[1 + i];
                if count_include_pad {
                    shape[1 + i] += 2 * padding[i];
                    lo[i] = 0;
                }
            }
            let mut rest = hi;
            if count_include_pad {
                for i in 0..D {
                    rest[i] -= padding[i];
                }
            }
            let ind = pad_spatial(&ops::ones(&shape, dt)?, &lo, &rest, 0.0)?;
            let counts = ops::sum(&windows(&ind, &kernel, &stride, &ones, &out)?, axis, false)?;
            ops::divide(&ops::sum(&w.astype(dt)?, axis, false)?, &counts)
        }
    }
}

fn geometry<const D: usize>(
    kernel: [usize; D],
    stride: [usize; D],
    padding: [usize; D],
) -> Geometry<D> {
    Geometry {
        kernel,
        stride,
        padding,
        dilation: [1; D],
        ceil_mode: false,
    }
}

/// Max pooling over `D` spatial dims of a channels-last input (N, S..., C): the maximum of each
/// `kernel` window, windows `stride` apart, the input padded by `padding` with -inf. `Err` for a
/// wrong rank, a zero kernel or stride, `padding > kernel / 2`, or a kernel larger than the
/// padded input. [`MaxPool`] adds `dilation` and `ceil_mode`.
pub fn max_pool_nd<const D: usize>(
    x: &Array,
    kernel: [usize; D],
    stride: [usize; D],
    padding: [usize; D],
) -> Result<Array> {
    pool(Kind::Max, x, geometry(kernel, stride, padding))
}

/// Average pooling over `D` spatial dims (see the module documentation for the padding and
/// `count_include_pad`); errors as [`max_pool_nd`]. [`AvgPool`] adds `ceil_mode` and
/// `divisor_override`.
pub fn avg_pool_nd<const D: usize>(
    x: &Array,
    kernel: [usize; D],
    stride: [usize; D],
    padding: [usize; D],
    count_include_pad: bool,
) -> Result<Array> {
    let kind = Kind::Avg {
        count_include_pad,
        divisor_override: None,
    };
    pool(kind, x, geometry(kernel, stride, padding))
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

/// Max pooling layer over `D` spatial dims ([`MaxPool1d`], [`MaxPool2d`]), PyTorch's
/// `nn.MaxPool{1,2}d(kernel_size, stride, padding, dilation, ceil_mode)`. `new(kernel)` uses
/// stride = kernel, no padding, dilation 1 and floor mode, as PyTorch and MLX.
/// ```
/// use tessera_core::{Dtype, ops};
/// use tessera_nn::{Module, pool::{MaxPool1d, MaxPool2d}};
/// let pool = MaxPool2d::new(3).stride(2).padding(1);
/// let y = pool.forward(&ops::zeros(&[1, 8, 8, 4], Dtype::F32).unwrap()).unwrap();
/// assert_eq!(y.shape(), &[1, 4, 4, 4]);
/// // ceil_mode keeps the partial window at the end: 7 -> 4 instead of 3.
/// let x = ops::zeros(&[1, 7, 2], Dtype::F32).unwrap();
/// assert_eq!(MaxPool1d::new(2).forward(&x).unwrap().shape(), &[1, 3, 2]);
/// assert_eq!(MaxPool1d::new(2).ceil_mode(true).forward(&x).unwrap().shape(), &[1, 4, 2]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool<const D: usize> {
    pub kernel_size: [usize; D],
    pub stride: [usize; D],
    pub padding: [usize; D],
    /// Spacing between the window's elements.
    pub dilation: [usize; D],
    /// Ceiling instead of floor in the output size (see the module documentation).
    pub ceil_mode: bool,
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
            dilation: [1; D],
            ceil_mode: false,
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
    pub fn dilation(mut self, v: impl Into<Dims<D>>) -> Self {
        self.dilation = v.into().0;
        self
    }
    pub fn ceil_mode(mut self, v: bool) -> Self {
        self.ceil_mode = v;
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
    /// Errors as [`max_pool_nd`], and for a zero dilation.
    fn forward(&self, x: &Array) -> Result<Array> {
        let g = Geometry {
            kernel: self.kernel_size,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            ceil_mode: self.ceil_mode,
        };
        pool(Kind::Max, x, g)
    }
}

/// Average pooling layer over `D` spatial dims ([`AvgPool1d`], [`AvgPool2d`]), PyTorch's
/// `nn.AvgPool{1,2}d(kernel_size, stride, padding, ceil_mode, count_include_pad,
/// divisor_override)`. `new(kernel)` uses stride = kernel, no padding, floor mode,
/// `count_include_pad = true` and no divisor override, as PyTorch. `divisor_override` (every
/// window's sum divided by it) exists in PyTorch for 2-d (and 3-d) pooling only; here for any
/// `D` (PyTorch's 1-d pooling is its 2-d pooling over `(1, L)`).
/// ```
/// use tessera_core::Array;
/// use tessera_nn::{Module, pool::AvgPool1d};
/// let x = Array::from_slice(&[1.0f32, 3.0, 2.0, 6.0, 4.0], &[1, 5, 1]).unwrap();
/// // Windows [1, 3], [2, 6], and with ceil_mode the partial [4] (divided by 1: the position
/// // past the input is not padding).
/// let y = AvgPool1d::new(2).ceil_mode(true).forward(&x).unwrap();
/// assert_eq!(y.to_vec::<f32>().unwrap(), vec![2.0, 4.0, 4.0]);
/// let y = AvgPool1d::new(2).divisor_override(Some(4)).forward(&x).unwrap();
/// assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool<const D: usize> {
    pub kernel_size: [usize; D],
    pub stride: [usize; D],
    pub padding: [usize; D],
    /// Ceiling instead of floor in the output size (see the module documentation).
    pub ceil_mode: bool,
    pub count_include_pad: bool,
    /// Divides every window's sum by this instead of a count (must be at least 1).
    pub divisor_override: Option<usize>,
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
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
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
    pub fn ceil_mode(mut self, v: bool) -> Self {
        self.ceil_mode = v;
        self
    }
    pub fn count_include_pad(mut self, v: bool) -> Self {
        self.count_include_pad = v;
        self
    }
    pub fn divisor_override(mut self, v: Option<usize>) -> Self {
        self.divisor_override = v;
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
    /// Errors as [`avg_pool_nd`], and for `divisor_override = Some(0)`.
    fn forward(&self, x: &Array) -> Result<Array> {
        let kind = Kind::Avg {
            count_include_pad: self.count_include_pad,
            divisor_override: self.divisor_override,
        };
        let g = Geometry {
            kernel: self.kernel_size,
            stride: self.stride,
            padding: self.padding,
            dilation: [1; D],
            ceil_mode: self.ceil_mode,
        };
        pool(kind, x, g)
    }
}
