//! The CPU backend: vectorised kernels (runtime AVX-512/AVX2 selection, portable fallback),
//! a persistent thread pool for large ops, GEMM through the `gemm` crate and our own GEMV and
//! bf16 kernels. Kernels accept strided inputs; views never copy.

pub(crate) mod affine;
#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_amx;
#[cfg(target_arch = "x86_64")]
mod attention_avx2;
mod attention_tiled;
#[cfg(target_arch = "x86_64")]
mod attention_x86;
mod binary;
pub mod cache;
mod collective;
pub(crate) mod copy;
mod fast;
mod fused;
mod fused_operand;
mod fused_tiled;
mod gemm;
mod index;
mod matmul;
pub mod pool;
mod qmatmul;
pub(crate) mod quant;
pub mod random;
mod reduce;
pub mod simd;
mod softmax;
mod sort;
pub(crate) mod strided;
mod unary;

use super::{Backend, Delivered};
use crate::array::Meta;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::layout::ArrayData;
use crate::primitive::Primitive;
use crate::stream::Stream;
pub(crate) use attention::fused_is_faster as fused_attention_is_faster;

/// Where a kernel that may work in place put its output.
pub(crate) enum Written {
    /// Into input `i`, which was donated: it becomes the output ([`Delivered::InPlace`]).
    Input(usize),
    /// Into this new array.
    New(ArrayData),
}

impl Written {
    fn deliver(self, results: &mut crate::array::Outputs) -> Delivered {
        match self {
            Written::Input(i) => Delivered::InPlace(i),
            Written::New(data) => {
                results.push(data);
                Delivered::Pushed
            }
        }
    }
}

/// The CPU backend (a unit struct: all state lives in the pool and the allocator).
pub struct Cpu;

pub(crate) static CPU: Cpu = Cpu;

fn one(outputs: &[Meta]) -> Result<&Meta> {
    outputs.first().ok_or_else(|| Error::Invalid {
        op: "eval",
        msg: "node without outputs".into(),
    })
}

/// Input `i` by reference: a kernel may donate it (write in place) only if nothing else holds
/// its buffer, so it must not be cloned on the way in.
fn arg<'a>(inputs: &'a [ArrayData], i: usize, p: &Primitive) -> Result<&'a ArrayData> {
    inputs.get(i).ok_or_else(|| Error::Invalid {
        op: "eval",
        msg: format!("{p} is missing input {i}"),
    })
}

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn supports(&self, _primitive: &Primitive, _dtypes: &[Dtype]) -> bool {
        true
    }

    fn eval(
        &self,
        _stream: &Stream,
        p: &Primitive,
        inputs: &[ArrayData],
        outputs: &[Meta],
        results: &mut crate::array::Outputs,
    ) -> Result<Delivered> {
        let out = one(outputs)?;
        let x = || arg(inputs, 0, p);
        let data = match p {
            Primitive::Unary(op) => return Ok(unary::unary(*op, x()?, out)?.deliver(results)),
            Primitive::Binary(op) => {
                let w = binary::binary(*op, x()?, arg(inputs, 1, p)?, out)?;
                return Ok(w.deliver(results));
            }
            Primitive::Select => binary::select(x()?, arg(inputs, 1, p)?, arg(inputs, 2, p)?, out)?,
            Primitive::AsType(dt) => {
                let x = x()?;
                if x.dtype == *dt {
                    x.clone()
                } else {
                    copy::convert(x, *dt)?
                }
            }
            Primitive::StopGradient | Primitive::Depends => x()?.clone(),
            Primitive::Fused(prog) => fused::run(&prog.0, inputs, out)?,
            Primitive::Custom(op) => {
                // Run the op's forward graph on the input data (a nested evaluation).
                let args: Vec<crate::Array> = inputs
                    .iter()
                    .cloned()
                    .map(crate::Array::from_data)
                    .collect();
                let y = op.0.forward(&args)?;
                if y.shape() != out.shape.as_slice() || y.dtype() != out.dtype {
                    return Err(Error::Invalid {
                        op: "custom",
                        msg: format!(
                            "{} returned a different shape or dtype than when it was traced",
                            op.0.name()
                        ),
                    });
                }
                y.data()?
            }
            Primitive::Copy => copy::ensure_contiguous(x()?)?,
            Primitive::Arange { start, step } => arange(*start, *step, out)?,
            Primitive::RandomBits => random::random_bits(x()?, out)?,
            Primitive::Reshape(shape) => index::reshape(x()?, shape)?,
            Primitive::Transpose(perm) => index::transpose(x()?, perm),
            Primitive::Slice { start, step } => index::slice(x()?, start, step, &out.shape),
            Primitive::Broadcast(shape) => index::broadcast(x()?, shape),
            Primitive::Reduce { op, axes } => reduce::reduce(*op, axes, x()?, out)?,
            Primitive::ArgReduce { op, axis } => reduce::arg_reduce(*op, *axis, x()?, out)?,
            Primitive::Scan {
                op,
                axis,
                reverse,
                inclusive,
            } => reduce::scan(*op, *axis, *reverse, *inclusive, x()?, out)?,
            Primitive::Concatenate { axis } => index::concatenate(*axis, inputs, out)?,
            Primitive::Take { axis } => index::take(*axis, x()?, arg(inputs, 1, p)?, out)?,
            Primitive::TakeAlong { axis } => {
                index::take_along(*axis, x()?, arg(inputs, 1, p)?, out)?
            }
            Primitive::ScatterAlong { axis, mode } => index::scatter_along(
                *axis,
                *mode,
                x()?,
                arg(inputs, 1, p)?,
                arg(inputs, 2, p)?,
                out,
            )?,
            Primitive::SliceUpdate { start, step } => {
                index::slice_update(x()?, arg(inputs, 1, p)?, start, step)?
            }
            Primitive::Matmul => matmul::matmul(x()?, arg(inputs, 1, p)?, out)?,
            Primitive::QuantizedMatmul { format } => {
                qmatmul::quantized_matmul(*format, x()?, arg(inputs, 1, p)?, out)?
            }
            Primitive::GatedQuantizedMatmul { format, activation } => {
                qmatmul::gated_quantized_matmul(
                    *format,
                    *activation,
                    x()?,
                    arg(inputs, 1, p)?,
                    out,
                )?
            }
            Primitive::Dequantize { format } => qmatmul::dequantize(*format, x()?, out)?,
            Primitive::QuantizedRows { format } => {
                qmatmul::take_rows(*format, x()?, arg(inputs, 1, p)?, out)?
            }
            Primitive::AffineQuantize {
                group_size,
                bits,
                part,
            } => affine::quantize(*group_size, *bits, *part, x()?, out)?,
            Primitive::AffineDequantize { group_size, bits } => affine::dequantize(
                *group_size,
                *bits,
                x()?,
                arg(inputs, 1, p)?,
                arg(inputs, 2, p)?,
                out,
            )?,
            Primitive::AffineQuantizedMatmul {
                transpose,
                group_size,
                bits,
            } => affine::quantized_matmul(
                *transpose,
                *group_size,
                *bits,
                x()?,
                arg(inputs, 1, p)?,
                arg(inputs, 2, p)?,
                arg(inputs, 3, p)?,
                out,
            )?,
            Primitive::Softmax => softmax::softmax(x()?, out)?,
            Primitive::RmsNorm { eps } => fast::rms_norm(*eps, x()?, inputs.get(1), out)?,
            Primitive::LayerNorm { eps, weight, bias } => {
                let w = weight.then(|| inputs.get(1)).flatten();
                let b = bias.then(|| inputs.get(1 + *weight as usize)).flatten();
                fast::layer_norm(*eps, x()?, w, b, out)?
            }
            Primitive::Sdpa { scale } => attention::sdpa(*scale, inputs, out)?,
            Primitive::Rope { interleaved } => fast::rope(
                *interleaved,
                x()?,
                arg(inputs, 1, p)?,
                arg(inputs, 2, p)?,
                out,
            )?,
            Primitive::Collective { op, group } => {
                return collective::run(*op, group, inputs, out, results);
            }
            Primitive::Sort { axis } => sort::sort(*axis, x()?, out, false)?,
            Primitive::ArgSort { axis } => sort::sort(*axis, x()?, out, true)?,
        };
        results.push(data);
        Ok(Delivered::Pushed)
    }

    fn synchronize(&self, _stream: &Stream) -> Result<()> {
        Ok(())
    }

    fn prefetch(&self, addr: usize, len: usize) {
        pool::global().hint_prefetch(addr, len);
    }
}

fn arange(start: f64, step: f64, out: &Meta) -> Result<ArrayData> {
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    let n = o.size();
    crate::dispatch_dtype!(out.dtype, T => {
        let d = o.mut_ptr::<T>();
        for i in 0..n {
            // SAFETY: i < n.
            unsafe { *d.add(i) = <T as crate::dtype::Element>::from_f64(start + i as f64 * step) };
        }
    });
    Ok(o)
}
