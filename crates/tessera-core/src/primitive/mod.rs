//! The closed set of graph operations. Every backend matches on it exhaustively, so a new
//! variant breaks the build until each backend handles it or reports `Unsupported`.
//!
//! Composite ops (mean, var, softmax, eye, pad, ...) are built from these in `ops`, so they need
//! no kernel and no derivative rule of their own.

pub(crate) mod jvp;
pub(crate) mod vjp;

use crate::dtype::Dtype;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Abs,
    Neg,
    Sign,
    Exp,
    Expm1,
    Log,
    Log1p,
    Log2,
    Sqrt,
    Rsqrt,
    Square,
    Reciprocal,
    Sin,
    Cos,
    Tan,
    Tanh,
    Sinh,
    Cosh,
    Asin,
    Acos,
    Atan,
    Sigmoid,
    Erf,
    Erfinv,
    Floor,
    Ceil,
    /// Round half to even, as NumPy.
    Round,
    IsNan,
    IsInf,
    LogicalNot,
    BitwiseNot,
}

impl UnaryOp {
    /// Ops whose output is bool whatever the input.
    pub fn returns_bool(self) -> bool {
        matches!(self, UnaryOp::IsNan | UnaryOp::IsInf | UnaryOp::LogicalNot)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Rem,
    Pow,
    Max,
    Min,
    Atan2,
    LogAddExp,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LogicalAnd,
    LogicalOr,
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
}

impl BinaryOp {
    /// Comparisons and logical ops produce bool.
    pub fn returns_bool(self) -> bool {
        use BinaryOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge | LogicalAnd | LogicalOr)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
    /// Logical and (output bool).
    All,
    /// Logical or (output bool).
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgReduceOp {
    ArgMax,
    ArgMin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanOp {
    Sum,
    Prod,
    Max,
    Min,
}

/// Which output of [`Primitive::AffineQuantize`] a node computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AffinePart {
    /// The packed `u32` words.
    Packed,
    /// Per-group scales.
    Scales,
    /// Per-group biases.
    Biases,
}

/// The activation of a gated product ([`Primitive::GatedQuantizedMatmul`]): `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GateActivation {
    /// `x * sigmoid(x)` (SwiGLU: Llama, Qwen, Mistral, Phi-3).
    Silu,
    /// GELU with the tanh approximation (GeGLU: Gemma).
    GeluTanh,
}

/// How scattered values combine with what is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScatterMode {
    Set,
    Add,
}

/// One node's operation. Shapes and dtypes of outputs are computed by `ops` when the node is
/// built; the backend only computes values.
#[derive(Debug, Clone, PartialEq)]
pub enum Primitive {
    // Element-wise.
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `where(cond, x, y)`: inputs are cond (bool), x, y, already broadcast-compatible.
    Select,
    AsType(Dtype),
    /// A row-major copy (what `contiguous` and a non-view reshape need).
    Copy,
    /// Identity whose derivative is zero (`stop_gradient`).
    StopGradient,
    /// Identity of input 0; the other inputs are only ordering dependencies (they are evaluated
    /// first). Checkpointing uses it so recomputation waits for the cotangent.
    Depends,

    // Creation.
    /// `start + i * step` for i in 0..n, in the output dtype.
    Arange {
        start: f64,
        step: f64,
    },
    /// Threefry random bits: input is a key (u32, shape (2,)), output u32 of the node's shape.
    RandomBits,

    // Views: zero-copy when the layout allows.
    Reshape(Vec<usize>),
    Transpose(Vec<usize>),
    /// Per-axis start, step; the output shape gives the counts. Steps may be negative.
    Slice {
        start: Vec<usize>,
        step: Vec<isize>,
    },
    Broadcast(Vec<usize>),

    // Reductions and scans.
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
    },
    ArgReduce {
        op: ArgReduceOp,
        axis: usize,
    },
    Scan {
        op: ScanOp,
        axis: usize,
        reverse: bool,
        inclusive: bool,
    },

    // Data movement.
    Concatenate {
        axis: usize,
    },
    /// `take(a, indices, axis)`: output shape a.shape[..axis] + indices.shape + a.shape[axis+1..].
    /// Negative indices wrap once; indices still out of range are an evaluation error.
    Take {
        axis: usize,
    },
    /// `take_along_axis(a, indices, axis)`; indices broadcast to the output shape.
    TakeAlong {
        axis: usize,
    },
    /// Writes `values` into a copy of `a` at `indices` along `axis` (shapes as take_along_axis).
    ScatterAlong {
        axis: usize,
        mode: ScatterMode,
    },
    /// Writes `update` into a copy of `a` over the strided window start/step (shape of update),
    /// converted to a's dtype as it is written (as `astype` converts: a KV cache stores f32
    /// keys as f16 without a conversion node).
    SliceUpdate {
        start: Vec<usize>,
        step: Vec<isize>,
    },

    // Linear algebra.
    /// Batched matmul of (.., m, k) @ (.., k, n) with equal (already broadcast) batch dims.
    Matmul,
    /// `x @ Wᵀ` with W block-quantized: inputs x (.., k) float and W `u8` (n, row_bytes) holding
    /// the raw blocks of `format`; output (.., n) in x's dtype.
    QuantizedMatmul {
        format: crate::quant::GgmlType,
    },
    /// A gated MLP's first product in one node: W stacks `2f` rows of `format` blocks, gate and
    /// up alternating every 8 rows (rows `16j..16j + 8` are gate rows `8j..8j + 8`, the next 8
    /// the matching up rows); output (.., f) = `activation(x @ gateᵀ) * (x @ upᵀ)` in x's dtype.
    /// See `ops::gguf_gated_matmul`.
    GatedQuantizedMatmul {
        format: crate::quant::GgmlType,
        activation: GateActivation,
    },
    /// Decodes `u8` (.., row_bytes) rows of `format` blocks into f32 (.., k).
    Dequantize {
        format: crate::quant::GgmlType,
    },
    /// Rows `ids` (input 1, integers of any shape) of the `u8` (n, row_bytes) matrix of `format`
    /// blocks (input 0) decoded to f32 (ids..., k): an embedding lookup that decodes only the
    /// rows asked for, from an interleaved layout too. See `ops::gguf_take_rows`.
    QuantizedRows {
        format: crate::quant::GgmlType,
    },
    /// One output of MLX-style affine group quantization of a float array (.., d) along its last
    /// axis (see `ops::quantize`): the packed `u32` words (.., d * bits / 32), or the per-group
    /// scales or biases (.., d / group_size) in the input's dtype. Each part is its own node (the
    /// transforms work on single-output nodes); quantizing is an offline step, so recomputing
    /// the group ranges per part costs little.
    AffineQuantize {
        group_size: usize,
        bits: u32,
        part: AffinePart,
    },
    /// `scale * q + bias` per group: inputs `w_q` `u32` (.., d * bits / 32), scales and biases
    /// (.., d / group_size); output (.., d) in the scales' dtype, rounded as MLX does.
    AffineDequantize {
        group_size: usize,
        bits: u32,
    },
    /// `x @ Wᵀ` (`transpose`) or `x @ W` with W affine-quantized: inputs x (.., k), `w_q`
    /// `u32` 2-D, scales, biases 2-D; output (.., n) (see `ops::quantized_matmul`).
    AffineQuantizedMatmul {
        transpose: bool,
        group_size: usize,
        bits: u32,
    },

    // Fused normalisations (the composite in `ops` is the reference and the fallback).
    /// Softmax over the last axis, in one pass over memory per row.
    Softmax,

    /// RMS normalisation over the last axis; inputs x and optionally the weight.
    RmsNorm {
        eps: f64,
    },
    /// Layer normalisation over the last axis; inputs x, then the weight if `weight`, then
    /// the bias if `bias`.
    LayerNorm {
        eps: f64,
        weight: bool,
        bias: bool,
    },
    /// Rotary embedding of x (..., t, heads, d) by cos/sin tables (t, r).
    Rope {
        interleaved: bool,
    },
    /// Attention softmax(q kᵀ scale + mask) v with grouped-query heads; inputs q, k, v and
    /// optionally the additive mask.
    Sdpa {
        scale: f64,
    },

    /// A collective over a group of processes (see [`crate::collective`]). Never merged or
    /// folded by `compile`: each node is one exchange every rank must take part in.
    Collective {
        op: crate::collective::CollectiveOp,
        group: crate::collective::GroupRef,
    },

    /// A user-defined op: a forward written with ops, optionally its own derivative.
    Custom(CustomRef),
    /// Element-wise ops fused by `compile` into one pass over memory.
    Fused(FusedRef),

    // Sorting.
    Sort {
        axis: usize,
    },
    ArgSort {
        axis: usize,
    },
}

impl Primitive {
    /// The input this primitive's kernel streams from memory once per call when it is already
    /// computed before the graph runs: a product's weights. The graph walk names it to the
    /// backend ahead of time ([`crate::backend::Backend::prefetch`]).
    pub fn streamed_input(&self) -> Option<usize> {
        match self {
            Primitive::Matmul
            | Primitive::QuantizedMatmul { .. }
            | Primitive::GatedQuantizedMatmul { .. }
            | Primitive::AffineQuantizedMatmul { .. } => Some(1),
            _ => None,
        }
    }

    /// Whether a failed kernel of this primitive may have written a donated input partway: an
    /// all-reduce reduces in place and fails when a peer is lost, possibly after summing some
    /// of the data. Such an input is not given back after a failure (it would pass partial
    /// sums off as its value); other kernels fail before writing or write only new arrays.
    pub fn spoils_donated_inputs_on_failure(&self) -> bool {
        matches!(
            self,
            Primitive::Collective {
                op: crate::collective::CollectiveOp::AllReduce(_),
                ..
            }
        )
    }
}

impl fmt::Display for Primitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Primitive::Unary(op) => write!(f, "{op:?}"),
            Primitive::Binary(op) => write!(f, "{op:?}"),
            other => {
                let s = format!("{other:?}");
                let name = s
                    .split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or("?");
                f.write_str(name)
            }
        }
    }
}

/// A user-defined operation: the escape hatch of the closed primitive set. Its forward is written
/// with the public ops (so every backend can run it); its derivatives default to differentiating
/// that forward, or can be given explicitly (a custom VJP, a custom JVP, or both).
///
/// Because the forward's intermediates live only inside the node's evaluation, the backward pass
/// recomputes them: this is also how `checkpoint` trades compute for memory.
///
/// Forward mode (`jvp`) uses, in order: [`CustomOp::jvp`]; else the transpose of
/// [`CustomOp::vjp`] when the op has one (so both modes follow the derivative the user wrote,
/// even one that is not the forward's true derivative, e.g. a straight-through estimator); else
/// forward mode through `forward`, recomputed from the inputs.
pub trait CustomOp: Send + Sync {
    fn name(&self) -> &str;
    /// The output, built with ops from the inputs.
    fn forward(&self, inputs: &[crate::Array]) -> crate::Result<crate::Array>;
    /// Cotangents of the inputs given the output and its cotangent; `None` = differentiate
    /// through `forward` (recomputing it).
    fn vjp(
        &self,
        _inputs: &[crate::Array],
        _output: &crate::Array,
        _cotangent: &crate::Array,
    ) -> Option<crate::Result<Vec<crate::Array>>> {
        None
    }
    /// Tangent of the output given the inputs, the output and the inputs' tangents (`None`: a
    /// zero tangent, e.g. an input that does not depend on the differentiated arguments); same
    /// shape as the output. Must be linear in the tangents. `None` = derive it (see the trait
    /// docs: the transpose of `vjp` if given, else forward mode through `forward`).
    fn jvp(
        &self,
        _inputs: &[crate::Array],
        _output: &crate::Array,
        _tangents: &[Option<crate::Array>],
    ) -> Option<crate::Result<crate::Array>> {
        None
    }
}

/// A shared handle to a [`CustomOp`]; equal when it is the same op object.
#[derive(Clone)]
pub struct CustomRef(pub std::sync::Arc<dyn CustomOp>);

impl PartialEq for CustomRef {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for CustomRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Custom({})", self.0.name())
    }
}

/// One step of a fused element-wise program: reads registers, writes the next register.
#[derive(Debug, Clone, PartialEq)]
pub enum FusedStep {
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
    /// A comparison, written as 1.0 / 0.0 (masks never leave the program).
    Compare(BinaryOp, usize, usize),
    /// `mask != 0 ? x : y`.
    Select(usize, usize, usize),
}

/// A fused element-wise program over f32: registers `0..n_inputs` are the inputs (full-size or
/// scalars), each step appends one register, and the last register is the output, optionally
/// reduced over its last axis of `len` elements (kept as a dim of 1, as `Reduce` does).
#[derive(Debug, PartialEq)]
pub struct FusedProgram {
    pub n_inputs: usize,
    pub steps: Vec<FusedStep>,
    /// A trailing reduction over the last axis: (op, its length). Sum, Max or Min.
    pub reduce: Option<(ReduceOp, usize)>,
}

/// Shared handle to a [`FusedProgram`].
#[derive(Clone, Debug)]
pub struct FusedRef(pub std::sync::Arc<FusedProgram>);

impl PartialEq for FusedRef {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}
