//! Weights as the model uses them: a linear layer's matrix stays in whatever form the file holds
//! (dense f32/f16/bf16, or GGUF blocks that the quantized matmul reads directly), and a
//! [`WeightSource`] hands them out by their GGUF-style name (`blk.3.attn_q.weight`).

use crate::config::Activation;
use crate::error::{Error, Result};
use tessera_core::memory::Arena;
use tessera_core::quant::GgmlType;
use tessera_core::{Array, Dtype, ops};

/// The matrix of a linear map `out x in`, applied as `x @ Wᵀ`.
#[derive(Clone)]
pub enum Weight {
    /// A float array of shape `(out, in)`.
    Dense(Array),
    /// GGUF blocks: `u8` of shape `(out, format.row_bytes(in))`.
    Quantized {
        blocks: Array,
        format: GgmlType,
        in_features: usize,
    },
    /// MLX affine groups (`ops::quantize`): packed `u32` `(out, in * bits / 32)` with scales
    /// and biases `(out, in / group_size)`, the layout of MLX community checkpoints.
    Affine {
        packed: Array,
        scales: Array,
        biases: Array,
        group_size: usize,
        bits: u32,
    },
}

impl Weight {
    pub fn out_features(&self) -> usize {
        match self {
            Weight::Dense(w) => w.shape()[0],
            Weight::Quantized { blocks, .. } => blocks.shape()[0],
            Weight::Affine { packed, .. } => packed.shape()[0],
        }
    }

    pub fn in_features(&self) -> usize {
        match self {
            Weight::Dense(w) => w.shape()[1],
            Weight::Quantized { in_features, .. } => *in_features,
            Weight::Affine { packed, bits, .. } => packed.shape()[1] * 32 / *bits as usize,
        }
    }

    /// A short description, e.g. `Q4_K` or `bf16`.
    pub fn kind(&self) -> String {
        match self {
            Weight::Dense(w) => w.dtype().to_string(),
            Weight::Quantized { format, .. } => format.name().to_string(),
            Weight::Affine {
                bits, group_size, ..
            } => format!("affine{bits}/g{group_size}"),
        }
    }

    /// Bytes the matrix occupies (what a matmul with it reads).
    pub fn nbytes(&self) -> usize {
        match self {
            Weight::Dense(w) => w.nbytes(),
            Weight::Quantized { blocks, .. } => blocks.nbytes(),
            Weight::Affine {
                packed,
                scales,
                biases,
                ..
            } => packed.nbytes() + scales.nbytes() + biases.nbytes(),
        }
    }

    /// `x @ Wᵀ`: `(..., in) -> (..., out)`, in x's dtype.
    pub fn apply(&self, x: &Array) -> Result<Array> {
        Ok(match self {
            Weight::Quantized { blocks, format, .. } => ops::gguf_matmul(x, blocks, *format)?,
            Weight::Affine {
                packed,
                scales,
                biases,
                group_size,
                bits,
            } => {
                let y = ops::quantized_matmul(x, packed, scales, biases, true, *group_size, *bits)?;
                ops::astype(&y, x.dtype())?
            }
            Weight::Dense(w) if w.dtype() == x.dtype() => {
                ops::matmul(x, &ops::transpose(w, None)?)?
            }
            // Low-precision weights: multiply in the weight's dtype (bf16 GEMM), never convert
            // the whole matrix to f32 on every call.
            Weight::Dense(w) => {
                let y = ops::matmul(&ops::astype(x, w.dtype())?, &ops::transpose(w, None)?)?;
                ops::astype(&y, x.dtype())?
            }
        })
    }

    /// This matrix as the CPU kernels read it fastest, in `arena` (a model's weights back to
    /// back in huge pages, in the order a forward pass reads them: see
    /// `tessera_core::memory::Arena`): Q4_0, Q4_1, Q5_0, Q8_0 and Q4_K to Q6_K become the
    /// row-interleaved `x8` layouts (see `tessera_core::quant::interleave_for_cpu`), and
    /// matrices that still point into a memory-mapped file are copied
    /// (`tessera_core::memory::own_in`; a decode step streams every weight once). The result
    /// still gives rows ([`Weight::rows`]) but an interleaved one cannot be stacked
    /// ([`Weight::concat_rows`]): stack first. A 4-bit MLX affine matrix whose scales and biases
    /// are f16 values becomes interleaved Q4_1 (see [`tessera_core::quant::affine_as_q4_1`]), an
    /// 8-bit one `A8x8` (see [`tessera_core::quant::affine8_for_cpu_in`]).
    pub fn for_matmul(self, arena: &Arena) -> Result<Weight> {
        if let Weight::Quantized {
            blocks,
            format,
            in_features,
        } = &self
            && let Some((blocks, format)) =
                tessera_core::quant::interleave_for_cpu_in(blocks, *format, arena)?
        {
            return Ok(Weight::Quantized {
                blocks,
                format,
                in_features: *in_features,
            });
        }
        if let Some(laid_out) = self.affine_for_cpu(arena)? {
            return Ok(laid_out);
        }
        self.map_arrays(|a| tessera_core::memory::own_in(a, arena))
    }

    /// A 4-bit affine matrix as interleaved Q4_1 (`tessera_core::quant::affine_as_q4_1`: the
    /// same weights, exactly, which the integer kernels stream about twice as fast), an 8-bit
    /// one as `A8x8` (`tessera_core::quant::affine8_for_cpu_in`), when the rewrite is exact and
    /// this CPU has the kernels; `None` otherwise (the affine kernels serve).
    fn affine_for_cpu(&self, arena: &Arena) -> Result<Option<Weight>> {
        let Weight::Affine {
            packed,
            scales,
            biases,
            group_size,
            bits,
        } = self
        else {
            return Ok(None);
        };
        let in_features = self.in_features();
        let quantized = |(blocks, format)| Weight::Quantized {
            blocks,
            format,
            in_features,
        };
        if *bits == 8 {
            // 8-bit codes keep their bytes, the header once per group (A8x8, A8x8s2, A8x8s4).
            let laid_out = tessera_core::quant::affine8_for_cpu_in(
                packed,
                scales,
                biases,
                *group_size,
                *bits,
                arena,
            )?;
            return Ok(laid_out.map(quantized));
        }
        if tessera_core::quant::cpu_layout(GgmlType::Q4_1) == GgmlType::Q4_1 {
            return Ok(None);
        }
        let Some(rows) =
            tessera_core::quant::affine_as_q4_1(packed, scales, biases, *group_size, *bits)?
        else {
            return Ok(None);
        };
        // Groups of 64 or 128 keep one header per group (Q4_1x8s2, Q4_1x8s4: the checkpoint's
        // 4.25 to 4.5 bits per value); groups of 32 are plain Q4_1x8.
        let share = *group_size / 32;
        let laid_out = match tessera_core::quant::interleave_shared_for_cpu_in(&rows, share, arena)?
        {
            Some(done) => Some(done),
            None => tessera_core::quant::interleave_for_cpu_in(&rows, GgmlType::Q4_1, arena)?,
        };
        Ok(laid_out.map(quantized))
    }

    /// The same matrix with `f` applied to each stored array (blocks, or packed values, scales
    /// and biases), which must keep their row structure.
    fn map_arrays(
        &self,
        mut f: impl FnMut(&Array) -> tessera_core::Result<Array>,
    ) -> Result<Weight> {
        Ok(match self {
            Weight::Dense(w) => Weight::Dense(f(w)?),
            Weight::Quantized {
                blocks,
                format,
                in_features,
            } => Weight::Quantized {
                blocks: f(blocks)?,
                format: *format,
                in_features: *in_features,
            },
            Weight::Affine {
                packed,
                scales,
                biases,
                group_size,
                bits,
            } => Weight::Affine {
                packed: f(packed)?,
                scales: f(scales)?,
                biases: f(biases)?,
                group_size: *group_size,
                bits: *bits,
            },
        })
    }

    /// Rows `ids` of the matrix as f32: an embedding lookup `(...) -> (..., in)`.
    pub fn rows(&self, ids: &Array) -> Result<Array> {
        Ok(match self {
            Weight::Dense(w) => ops::astype(&ops::take(w, ids, Some(0))?, Dtype::F32)?,
            Weight::Quantized {
                blocks,
                format,
                in_features,
            } => ops::gguf_take_rows(blocks, ids, *format, *in_features)?,
            Weight::Affine {
                packed,
                scales,
                biases,
                group_size,
                bits,
            } => {
                let rows = |a: &Array| ops::take(a, ids, Some(0));
                let d = ops::dequantize(
                    &rows(packed)?,
                    &rows(scales)?,
                    &rows(biases)?,
                    *group_size,
                    *bits,
                )?;
                ops::astype(&d, Dtype::F32)?
            }
        })
    }

    /// The matrices stacked by output rows into one (q, k and v into one qkv matrix), or
    /// `None` when they cannot share a matmul: different storage (format, dtype, bits, group
    /// size), different input widths, or a layout whose rows are interleaved (stack before
    /// [`Weight::for_matmul`]). The new matrix is built now, in memory, so the parts can be
    /// dropped.
    pub fn concat_rows(parts: &[&Weight]) -> Result<Option<Weight>> {
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        let inputs = first.in_features();
        let same = parts
            .iter()
            .all(|w| w.in_features() == inputs && first.stacks_with(w));
        if !same {
            return Ok(None);
        }
        // Stacks the i-th stored array of every part.
        let stack = |i: usize| -> Result<Array> {
            let arrays: Vec<Array> = parts.iter().map(|w| w.arrays()[i].clone()).collect();
            let a = ops::concatenate(&arrays, 0)?;
            a.eval()?;
            Ok(a)
        };
        Ok(Some(match first {
            Weight::Dense(_) => Weight::Dense(stack(0)?),
            Weight::Quantized { format, .. } => Weight::Quantized {
                blocks: stack(0)?,
                format: *format,
                in_features: inputs,
            },
            Weight::Affine {
                group_size, bits, ..
            } => Weight::Affine {
                packed: stack(0)?,
                scales: stack(1)?,
                biases: stack(2)?,
                group_size: *group_size,
                bits: *bits,
            },
        }))
    }

    /// Rows `r0..r1` of the matrix, as views (a stacked checkpoint matrix split into its
    /// maps); not for the row-interleaved CPU layouts, whose rows are not stored one by one.
    pub fn row_range(&self, r0: usize, r1: usize) -> Result<Weight> {
        if let Weight::Quantized { format, .. } = self
            && format.interleaved_rows() > 1
        {
            return Err(Error::Config(format!(
                "cannot take rows {r0}..{r1} of a {format} matrix: split it before laying it out"
            )));
        }
        self.map_arrays(|a| ops::slice_axis(a, 0, r0, r1))
    }

    /// A gated MLP's gate and up matrices as one, their rows alternating 8 at a time
    /// (`ops::interleave_gate_up`), for [`Weight::apply_gated`]; `None` unless both are
    /// quantized alike (GGUF blocks in a file format, or affine groups of one width and group
    /// size) with the same shape and a multiple of 8 rows. Dense matrices gain nothing from it.
    /// Built now, in memory (the parts can be dropped); lay it out for the CPU afterwards
    /// ([`Weight::for_matmul`]).
    pub fn interleave_gate_up(gate: &Weight, up: &Weight) -> Result<Option<Weight>> {
        let alike = !matches!(gate, Weight::Dense(_)) && gate.stacks_with(up);
        let f = gate.out_features();
        if !alike
            || up.out_features() != f
            || up.in_features() != gate.in_features()
            || !f.is_multiple_of(ops::GATE_ROWS)
        {
            return Ok(None);
        }
        let (ga, ua) = (gate.arrays(), up.arrays());
        let mut i = 0;
        let paired = gate.map_arrays(|_| {
            let a = ops::interleave_gate_up(ga[i], ua[i])?;
            a.eval()?;
            i += 1;
            Ok(a)
        });
        paired.map(Some)
    }

    /// `activation(x @ gateᵀ) * (x @ upᵀ)` for a matrix from [`Weight::interleave_gate_up`]
    /// (laid out or not): one kernel for GGUF blocks (`ops::gguf_gated_matmul`); `None` for
    /// other storage, which the caller gates after [`Weight::apply`].
    pub fn apply_gated(&self, x: &Array, activation: Activation) -> Result<Option<Array>> {
        Ok(match self {
            Weight::Quantized { blocks, format, .. } => {
                Some(ops::gguf_gated_matmul(x, blocks, *format, activation)?)
            }
            _ => None,
        })
    }

    /// Whether `other`'s rows can sit under this matrix's in one matrix: the same storage
    /// (dtype, GGUF format, or affine width and group size), not a row-interleaved layout.
    fn stacks_with(&self, other: &Weight) -> bool {
        match (self, other) {
            (Weight::Dense(a), Weight::Dense(b)) => a.dtype() == b.dtype(),
            (Weight::Quantized { format: a, .. }, Weight::Quantized { format: b, .. }) => {
                a == b && a.interleaved_rows() == 1
            }
            (
                Weight::Affine {
                    group_size: ga,
                    bits: ba,
                    ..
                },
                Weight::Affine {
                    group_size: gb,
                    bits: bb,
                    ..
                },
            ) => ga == gb && ba == bb,
            _ => false,
        }
    }

    /// The stored arrays, in the order `map_arrays` visits them.
    fn arrays(&self) -> Vec<&Array> {
        match self {
            Weight::Dense(w) => vec![w],
            Weight::Quantized { blocks, .. } => vec![blocks],
            Weight::Affine {
                packed,
                scales,
                biases,
                ..
            } => vec![packed, scales, biases],
        }
    }
}

/// Where a model's tensors come from (a GGUF file, a safetensors directory).
pub trait WeightSource {
    /// True when the tensor exists.
    fn has(&self, name: &str) -> bool;
    /// A 2-D matrix for a linear layer or embedding.
    fn matrix(&self, name: &str) -> Result<Weight>;
    /// A vector or small tensor (norm weights, biases) as f32.
    fn vector(&self, name: &str) -> Result<Array>;
}

/// Tensors of a GGUF file (names as in the file).
pub struct GgufSource<'a> {
    pub file: &'a tessera_io::gguf::GgufFile,
}

impl WeightSource for GgufSource<'_> {
    fn has(&self, name: &str) -> bool {
        self.file.info(name).is_some()
    }

    fn matrix(&self, name: &str) -> Result<Weight> {
        let info = self
            .file
            .info(name)
            .ok_or_else(|| Error::Config(format!("tensor '{name}' is missing from the file")))?;
        if info.shape.len() != 2 {
            return Err(Error::Config(format!(
                "tensor '{name}' should be a matrix, has shape {:?}",
                info.shape
            )));
        }
        let t = self.file.tensor(name)?;
        Ok(if info.ggml_type.is_quantized() {
            Weight::Quantized {
                blocks: t,
                format: info.ggml_type,
                in_features: info.shape[1],
            }
        } else {
            Weight::Dense(t)
        })
    }

    fn vector(&self, name: &str) -> Result<Array> {
        let info = self
            .file
            .info(name)
            .ok_or_else(|| Error::Config(format!("tensor '{name}' is missing from the file")))?;
        let t = self.file.tensor(name)?;
        if info.ggml_type.is_quantized() {
            let k = info.shape.last().copied().unwrap_or(0);
            let d = ops::gguf_dequantize(&t, info.ggml_type, k)?;
            return Ok(ops::reshape(&d, &info.shape)?);
        }
        Ok(ops::contiguous(&ops::astype(&t, Dtype::F32)?)?)
    }
}
