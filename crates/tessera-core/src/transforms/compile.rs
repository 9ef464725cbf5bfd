//! `compile`: trace a function once per input signature, simplify its graph (common-subexpression
//! elimination, no-op removal: see [`passes_through`]; subgraphs that do not depend on the inputs
//! are constants, computed once and reused by every call) and fuse chains of float32 element-wise
//! ops into single kernels that make one pass over memory. Compiled results equal uncompiled ones: the fused kernel runs
//! the same f32 element functions in the same order.
//!
//! [`compile_shapeless`] reuses one trace for inputs of any shape (same ranks and dtypes): each
//! node's output shape is re-derived from its inputs' (element-wise ops broadcast, reductions and
//! transposes follow their input, matmuls combine, reshapes that only add or drop unit dims
//! follow). A graph whose shapes cannot be re-derived for the new inputs (a reshape to a fixed
//! shape, a slice, a fused group whose inputs no longer line up) is traced again for those exact
//! shapes, so results are always right; [`Compiled::traces`] counts the traces.
//!
//! A chain ending in a sum, max or min over the last axis fuses that reduction too: the kernel
//! reduces each row with the reduce kernel's own loop, so results stay bitwise equal.
//!
//! Operands of a fused group may broadcast in any NumPy way (a bias, a column such as
//! `x - max(x, -1, keepdims)`, a scalar); the kernel reads them in place where a chunk lies
//! inside one of their runs and stages them otherwise.

use super::{node_key as key, tracer};
use crate::array::{Array, Node};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitive::{BinaryOp, FusedProgram, FusedRef, FusedStep, Primitive, UnaryOp};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where a template node's input comes from.
#[derive(Clone)]
enum Src {
    Input(usize),
    Node(usize),
    Const(Array),
}

struct TNode {
    primitive: Primitive,
    inputs: Vec<Src>,
    shape: Vec<usize>,
    dtype: Dtype,
}

/// The simplified graph for one input signature.
struct Plan {
    nodes: Vec<TNode>,
    outputs: Vec<Src>,
    /// The input shapes it was traced with.
    input_shapes: Vec<Vec<usize>>,
}

type Sig = Vec<(Vec<usize>, Dtype)>;
/// Plans by input ranks and dtypes (shapeless mode).
type RankCache = Mutex<HashMap<Vec<(usize, Dtype)>, Arc<Plan>>>;

/// A compiled function: call it like the original.
pub struct Compiled<F> {
    f: F,
    cache: Mutex<HashMap<Sig, Arc<Plan>>>,
    /// Shapeless mode: plans by input ranks and dtypes.
    shapeless: Option<RankCache>,
    traces: std::sync::atomic::AtomicUsize,
}

/// Compiles `f` (see the module docs). The graph is traced on first use of each input signature
/// (shapes and dtypes) and reused after.
/// ```
/// use tessera_core::{Array, ops, transforms::compile};
/// let f = compile(|x: &[Array]| Ok(vec![ops::tanh(&ops::add(&ops::multiply(&x[0], &x[0])?, &x[0])?)?]));
/// let x = Array::from_slice(&[0.5f32, -1.0, 2.0], &[3]).unwrap();
/// let y = f.call(&[x.clone()]).unwrap();
/// let expect = ops::tanh(&ops::add(&ops::multiply(&x, &x).unwrap(), &x).unwrap()).unwrap();
/// assert_eq!(y[0].to_vec::<f32>().unwrap(), expect.to_vec::<f32>().unwrap());
/// assert_eq!(f.fused_kernels(&[x]).unwrap(), 1);
/// ```
pub fn compile<F: Fn(&[Array]) -> Result<Vec<Array>>>(f: F) -> Compiled<F> {
    Compiled {
        f,
        cache: Mutex::new(HashMap::new()),
        shapeless: None,
        traces: std::sync::atomic::AtomicUsize::new(0),
    }
}

/// As [`compile`], but one trace serves inputs of any shape with the same ranks and dtypes
/// (see the module docs): for functions called on varying batch or sequence lengths.
/// ```
/// use tessera_core::{Array, ops, transforms::compile_shapeless};
/// let f = compile_shapeless(|x: &[Array]| {
///     Ok(vec![ops::sum(&ops::exp(&ops::multiply(&x[0], &x[0])?)?, -1, false)?])
/// });
/// for n in [2usize, 5, 9] {
///     let x = Array::from_vec((0..3 * n).map(|i| i as f32 / 10.0).collect(), &[3, n]).unwrap();
///     let want = ops::sum(&ops::exp(&ops::multiply(&x, &x).unwrap()).unwrap(), -1, false).unwrap();
///     assert_eq!(f.call(&[x]).unwrap()[0].to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
/// }
/// assert_eq!(f.traces(), 1);
/// ```
pub fn compile_shapeless<F: Fn(&[Array]) -> Result<Vec<Array>>>(f: F) -> Compiled<F> {
    Compiled {
        shapeless: Some(Mutex::new(HashMap::new())),
        ..compile(f)
    }
}

/// Whether an operand of shape `s` can enter a fused kernel whose elements have shape `full`:
/// when it broadcasts to it (NumPy rules; the kernel stages broadcast operands chunk by chunk,
/// `backend/cpu/fused_operand.rs`).
pub(crate) fn fusible_operand(s: &[usize], full: &[usize]) -> bool {
    s.len() <= full.len() && broadcast_all(&[s, full]).is_some_and(|b| b == full)
}

/// NumPy broadcasting of several shapes (`None` if they do not broadcast).
fn broadcast_all(shapes: &[&[usize]]) -> Option<Vec<usize>> {
    let n = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; n];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[n - s.len() + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return None;
            }
        }
    }
    Some(out)
}

/// The primitive and output shape of a template node for new input shapes, or `None` when it
/// cannot be re-derived (the caller then traces again).
fn reshape_for(
    p: &Primitive,
    traced_in: &[Vec<usize>],
    traced_out: &[usize],
    new_in: &[&[usize]],
) -> Option<(Primitive, Vec<usize>)> {
    if traced_in
        .iter()
        .zip(new_in)
        .all(|(a, b)| a.as_slice() == *b)
    {
        return Some((p.clone(), traced_out.to_vec()));
    }
    let same = |s: Vec<usize>| Some((p.clone(), s));
    match p {
        Primitive::Unary(_)
        | Primitive::AsType(_)
        | Primitive::Copy
        | Primitive::StopGradient
        | Primitive::Softmax
        | Primitive::Scan { .. }
        | Primitive::Sort { .. }
        | Primitive::ArgSort { .. } => same(new_in.first()?.to_vec()),
        Primitive::RmsNorm { .. } | Primitive::LayerNorm { .. } => same(new_in.first()?.to_vec()),
        Primitive::Binary(_) | Primitive::Select => same(broadcast_all(new_in)?),
        Primitive::Fused(FusedRef(prog)) => {
            // The kernel takes full-size, single-element and leading-axis-broadcast inputs.
            let full = broadcast_all(new_in)?;
            if !new_in.iter().all(|s| fusible_operand(s, &full)) {
                return None;
            }
            match prog.reduce {
                None => same(full),
                Some((op, _)) => {
                    // The trailing reduction follows the new last axis (within the length the
                    // fusion accepts, so results stay bitwise equal).
                    let len = *full.last()?;
                    if !(2..1 << 16).contains(&len) {
                        return None;
                    }
                    let mut out = full;
                    *out.last_mut()? = 1;
                    let prog = FusedProgram {
                        n_inputs: prog.n_inputs,
                        steps: prog.steps.clone(),
                        reduce: Some((op, len)),
                    };
                    Some((Primitive::Fused(FusedRef(Arc::new(prog))), out))
                }
            }
        }
        Primitive::Reduce { axes, .. } => {
            let mut s = new_in.first()?.to_vec();
            for &a in axes {
                *s.get_mut(a)? = 1;
            }
            same(s)
        }
        Primitive::ArgReduce { axis, .. } => {
            let mut s = new_in.first()?.to_vec();
            *s.get_mut(*axis)? = 1;
            same(s)
        }
        Primitive::Transpose(perm) => {
            let x = new_in.first()?;
            same(
                perm.iter()
                    .map(|&i| x.get(i).copied())
                    .collect::<Option<_>>()?,
            )
        }
        Primitive::Matmul => {
            let (a, b) = (new_in.first()?, new_in.get(1)?);
            let (n, m) = (a.len(), b.len());
            if n < 2 || n != m || a[..n - 2] != b[..m - 2] || a[n - 1] != b[m - 2] {
                return None;
            }
            let mut s = a[..n - 2].to_vec();
            s.extend([a[n - 2], b[m - 1]]);
            same(s)
        }
        Primitive::Reshape(_) => {
            // Only reshapes that add or drop unit dims carry over: the input's other dims keep
            // their order and land where the traced ones did.
            let (tin, x) = (traced_in.first()?, new_in.first()?);
            if tin.len() != x.len() {
                return None;
            }
            let kept_in: Vec<usize> = (0..tin.len()).filter(|&i| tin[i] != 1).collect();
            let kept_out: Vec<usize> = (0..traced_out.len())
                .filter(|&i| traced_out[i] != 1)
                .collect();
            let vals_in: Vec<usize> = kept_in.iter().map(|&i| tin[i]).collect();
            let vals_out: Vec<usize> = kept_out.iter().map(|&i| traced_out[i]).collect();
            if vals_in != vals_out || (0..x.len()).any(|i| tin[i] == 1 && x[i] != 1) {
                return None;
            }
            let mut out = traced_out.to_vec();
            for (&i, &o) in kept_in.iter().zip(&kept_out) {
                out[o] = x[i];
            }
            Some((Primitive::Reshape(out.clone()), out))
        }
        _ => None,
    }
}

impl<F: Fn(&[Array]) -> Result<Vec<Array>>> Compiled<F> {
    fn plan(&self, inputs: &[Array]) -> Result<Arc<Plan>> {
        let sig: Sig = inputs
            .iter()
            .map(|a| (a.shape().to_vec(), a.dtype()))
            .collect();
        if let Some(p) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sig)
        {
            return Ok(p.clone());
        }
        self.traces
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let plan = Arc::new(trace(&self.f, inputs, self.shapeless.is_none())?);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sig, plan.clone());
        Ok(plan)
    }

    /// How many times the function has been traced (once per signature; with
    /// [`compile_shapeless`], once per ranks and dtypes unless shapes could not be re-derived).
    pub fn traces(&self) -> usize {
        self.traces.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Shapeless mode: the plan for these ranks and dtypes instantiated for the inputs' shapes,
    /// or `None` when some node's shape cannot be re-derived.
    fn call_shapeless(&self, inputs: &[Array]) -> Result<Option<Vec<Array>>> {
        let Some(cache) = &self.shapeless else {
            return Ok(None);
        };
        let key: Vec<(usize, Dtype)> = inputs.iter().map(|a| (a.ndim(), a.dtype())).collect();
        let found = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let plan = match found {
            Some(p) => p,
            None => {
                let p = self.plan(inputs)?;
                cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, p.clone());
                p
            }
        };
        let mut built: Vec<Array> = Vec::with_capacity(plan.nodes.len());
        let get = |s: &Src, built: &[Array]| -> Array {
            match s {
                Src::Input(i) => inputs[*i].clone(),
                Src::Node(j) => built[*j].clone(),
                Src::Const(a) => a.clone(),
            }
        };
        let traced_shape = |s: &Src| -> Vec<usize> {
            match s {
                Src::Input(i) => plan.input_shapes[*i].clone(),
                Src::Node(j) => plan.nodes[*j].shape.clone(),
                Src::Const(a) => a.shape().to_vec(),
            }
        };
        for n in &plan.nodes {
            let ins: Vec<Array> = n.inputs.iter().map(|s| get(s, &built)).collect();
            let traced_in: Vec<Vec<usize>> = n.inputs.iter().map(traced_shape).collect();
            let new_in: Vec<&[usize]> = ins.iter().map(|a| a.shape()).collect();
            let Some((p, shape)) = reshape_for(&n.primitive, &traced_in, &n.shape, &new_in) else {
                return Ok(None);
            };
            built.push(Array::lazy(p, ins, shape, n.dtype));
        }
        Ok(Some(plan.outputs.iter().map(|s| get(s, &built)).collect()))
    }

    /// Runs the compiled function (lazily, like any op: evaluate the results as usual).
    pub fn call(&self, inputs: &[Array]) -> Result<Vec<Array>> {
        if let Some(out) = self.call_shapeless(inputs)? {
            return Ok(out);
        }
        let plan = self.plan(inputs)?;
        let mut built: Vec<Array> = Vec::with_capacity(plan.nodes.len());
        let get = |s: &Src, built: &[Array]| -> Array {
            match s {
                Src::Input(i) => inputs[*i].clone(),
                Src::Node(j) => built[*j].clone(),
                Src::Const(a) => a.clone(),
            }
        };
        for n in &plan.nodes {
            let ins: Vec<Array> = n.inputs.iter().map(|s| get(s, &built)).collect();
            built.push(Array::lazy(
                n.primitive.clone(),
                ins,
                n.shape.clone(),
                n.dtype,
            ));
        }
        Ok(plan.outputs.iter().map(|s| get(s, &built)).collect())
    }

    /// How many fused kernels the plan for these inputs holds (to check that fusion happened).
    pub fn fused_kernels(&self, inputs: &[Array]) -> Result<usize> {
        Ok(self
            .plan(inputs)?
            .nodes
            .iter()
            .filter(|n| matches!(n.primitive, Primitive::Fused(_)))
            .count())
    }

    /// Nodes in the plan for these inputs.
    pub fn node_count(&self, inputs: &[Array]) -> Result<usize> {
        Ok(self.plan(inputs)?.nodes.len())
    }
}

fn fusible_unary(op: UnaryOp) -> bool {
    !matches!(
        op,
        UnaryOp::IsNan | UnaryOp::IsInf | UnaryOp::LogicalNot | UnaryOp::BitwiseNot
    )
}

fn fusible_binary(op: BinaryOp) -> bool {
    use BinaryOp::*;
    matches!(
        op,
        Add | Sub | Mul | Div | FloorDiv | Rem | Pow | Max | Min | Atan2 | LogAddExp
    )
}

/// Traces `f` on tracers, builds the template with CSE and without no-ops, then fuses
/// element-wise groups. `fixed_shapes`: the plan serves these exact input shapes only (not
/// shapeless mode), so ops that are the identity only at these shapes are dropped too.
fn trace<F: Fn(&[Array]) -> Result<Vec<Array>>>(
    f: &F,
    inputs: &[Array],
    fixed_shapes: bool,
) -> Result<Plan> {
    let tracers: Vec<Array> = inputs.iter().map(tracer).collect();
    let outputs = f(&tracers)?;
    let tracer_index: HashMap<*const Node, usize> = tracers
        .iter()
        .enumerate()
        .map(|(i, t)| (key(t), i))
        .collect();
    // Post-order over nodes that depend on a tracer.
    let mut order: Vec<Array> = Vec::new();
    let mut state: HashMap<*const Node, bool> = HashMap::new(); // visited -> depends
    let mut stack: Vec<(Array, bool)> = outputs.iter().map(|o| (o.clone(), false)).collect();
    while let Some((a, expanded)) = stack.pop() {
        let k = key(&a);
        if expanded {
            let (ins, collective) = {
                let st = a.node.lock();
                let c = matches!(st.primitive, Some(Primitive::Collective { .. }));
                (st.inputs.clone(), c)
            };
            // A collective is an exchange, not a value: it runs on every call, never as a
            // constant captured at trace time.
            let dep = collective
                || ins.iter().any(|i| {
                    state.get(&key(i)).copied().unwrap_or(false)
                        || tracer_index.contains_key(&key(i))
                });
            state.insert(k, dep);
            if dep {
                order.push(a);
            }
            continue;
        }
        if state.contains_key(&k) || tracer_index.contains_key(&k) {
            continue;
        }
        let ins = a.node.lock().inputs.clone();
        if a.node.lock().primitive.is_none() {
            state.insert(k, false);
            continue;
        }
        stack.push((a, true));
        stack.extend(ins.into_iter().map(|i| (i, false)));
    }
    // Template with CSE: identical primitive + identical sources = one node. `index` maps each
    // traced node to its source in the template (a template node, or what a no-op passes on).
    let mut index: HashMap<*const Node, Src> = HashMap::new();
    let mut nodes: Vec<TNode> = Vec::new();
    let src_of = |a: &Array, index: &HashMap<*const Node, Src>| -> Src {
        if let Some(&i) = tracer_index.get(&key(a)) {
            Src::Input(i)
        } else if let Some(s) = index.get(&key(a)) {
            s.clone()
        } else {
            Src::Const(a.clone())
        }
    };
    let same_src = |x: &Src, y: &Src| match (x, y) {
        (Src::Input(a), Src::Input(b)) | (Src::Node(a), Src::Node(b)) => a == b,
        (Src::Const(a), Src::Const(b)) => a.same(b),
        _ => false,
    };
    for a in &order {
        let (p, ins) = {
            let st = a.node.lock();
            match &st.primitive {
                Some(p) => (p.clone(), st.inputs.clone()),
                None => continue,
            }
        };
        let srcs: Vec<Src> = ins.iter().map(|i| src_of(i, &index)).collect();
        // No-ops: the node is its input (a copy, an identity view or cast, `x * 1`, ...).
        if let Some(k) = passes_through(&p, &ins, a, fixed_shapes)
            && !matches!(
                (&p, &srcs[k]),
                (Primitive::Copy, Src::Input(_) | Src::Const(_))
            )
        {
            index.insert(key(a), srcs[k].clone());
            continue;
        }
        // Two identical collectives are still two exchanges: never merged.
        let mergeable = !matches!(p, Primitive::Collective { .. });
        let existing = nodes.iter().position(|n| {
            mergeable
                && n.primitive == p
                && n.shape == a.shape()
                && n.dtype == a.dtype()
                && n.inputs.len() == srcs.len()
                && n.inputs.iter().zip(&srcs).all(|(x, y)| same_src(x, y))
        });
        let j = match existing {
            Some(j) => j,
            None => {
                nodes.push(TNode {
                    primitive: p,
                    inputs: srcs,
                    shape: a.shape().to_vec(),
                    dtype: a.dtype(),
                });
                nodes.len() - 1
            }
        };
        index.insert(key(a), Src::Node(j));
    }
    let outs: Vec<Src> = outputs.iter().map(|o| src_of(o, &index)).collect();
    let input_dtypes: Vec<Dtype> = inputs.iter().map(|a| a.dtype()).collect();
    let input_shapes: Vec<Vec<usize>> = inputs.iter().map(|a| a.shape().to_vec()).collect();
    let mut plan = fuse(nodes, outs, &input_dtypes, &input_shapes);
    plan.input_shapes = input_shapes;
    Ok(plan)
}

/// Which input node `out` merely passes on, when it is the identity, bit for bit: a copy; a
/// transpose by the identity permutation; a cast to the dtype it has; `x * 1`, `1 * x`, `x / 1`,
/// `x - 0` and `x + -0.0` (for integers also `x + 0`) with an evaluated one-element constant that
/// changes neither x's shape nor its dtype; and with `fixed_shapes`, a reshape, broadcast or
/// slice that gives the input's own shape (in shapeless mode those name a fixed shape, which is
/// the identity only at the traced one).
fn passes_through(p: &Primitive, ins: &[Array], out: &Array, fixed_shapes: bool) -> Option<usize> {
    let same_as = |x: &Array| x.shape() == out.shape() && x.dtype() == out.dtype();
    match p {
        Primitive::Copy | Primitive::AsType(_) => (ins.len() == 1 && same_as(&ins[0])).then_some(0),
        Primitive::Transpose(perm) => {
            (perm.iter().enumerate().all(|(i, &q)| i == q) && same_as(&ins[0])).then_some(0)
        }
        Primitive::Reshape(_) | Primitive::Broadcast(_) => {
            (fixed_shapes && same_as(&ins[0])).then_some(0)
        }
        Primitive::Slice { start, step } => (fixed_shapes
            && same_as(&ins[0])
            && start.iter().all(|&s| s == 0)
            && step.iter().all(|&s| s == 1))
        .then_some(0),
        Primitive::Binary(op) if ins.len() == 2 => {
            // The constant's value, if it is an evaluated single element of no higher rank
            // than the other side (so the result keeps that side's shape in any mode).
            let value = |c: &Array, x: &Array| -> Option<f64> {
                (c.size() == 1 && c.ndim() <= x.ndim() && c.is_evaluated())
                    .then(|| c.item::<f64>().ok())
                    .flatten()
            };
            let int = out.dtype().is_integer();
            let numeric = int || out.dtype().is_float();
            let neg_zero = |v: f64| v == 0.0 && (int || v.is_sign_negative());
            let pos_zero = |v: f64| v == 0.0 && (int || v.is_sign_positive());
            let keeps = |k: usize, c: usize| -> bool {
                let Some(v) = value(&ins[c], &ins[k]) else {
                    return false;
                };
                numeric
                    && same_as(&ins[k])
                    && match (op, c) {
                        (BinaryOp::Mul, _) | (BinaryOp::Div, 1) => v == 1.0,
                        (BinaryOp::Add, _) => neg_zero(v),
                        (BinaryOp::Sub, 1) => pos_zero(v),
                        _ => false,
                    }
            };
            if keeps(0, 1) {
                Some(0)
            } else if keeps(1, 0) {
                Some(1)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Groups connected f32 element-wise nodes (same shape; other inputs anything that broadcasts to
/// it: [`fusible_operand`]) into fused nodes. A node joins a group when all of its consumers are
/// in that group and it is not an output of the function, so a value used twice inside a group
/// is just a register.
fn fuse(
    nodes: Vec<TNode>,
    outputs: Vec<Src>,
    input_dtypes: &[Dtype],
    input_shapes: &[Vec<usize>],
) -> Plan {
    let n = nodes.len();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, t) in nodes.iter().enumerate() {
        for s in &t.inputs {
            if let Src::Node(j) = s {
                consumers[*j].push(i);
            }
        }
    }
    let mut is_output = vec![false; n];
    for s in &outputs {
        if let Src::Node(j) = s {
            is_output[*j] = true;
        }
    }
    // A plan is traced for exact input shapes, so every operand's shape is known.
    let shape_of = |s: &Src, nodes: &[TNode]| -> Option<Vec<usize>> {
        match s {
            Src::Node(j) => Some(nodes[*j].shape.clone()),
            Src::Const(a) => Some(a.shape().to_vec()),
            Src::Input(i) => input_shapes.get(*i).cloned(),
        }
    };
    let dtype_of = |s: &Src| -> Dtype {
        match s {
            Src::Node(j) => nodes[*j].dtype,
            Src::Const(a) => a.dtype(),
            Src::Input(i) => input_dtypes.get(*i).copied().unwrap_or(Dtype::Bool),
        }
    };
    // Masks (comparisons of f32 values) may live inside a group but never be its output.
    let is_mask = |t: &TNode| -> bool {
        matches!(t.primitive, Primitive::Binary(op) if op.returns_bool() && !matches!(op, BinaryOp::LogicalAnd | BinaryOp::LogicalOr))
            && t.dtype == Dtype::Bool
            && t.inputs.iter().all(|s| dtype_of(s) == Dtype::F32)
    };
    let candidate = |t: &TNode| -> bool {
        let ok_op = match t.primitive {
            Primitive::Unary(op) => fusible_unary(op) && t.dtype == Dtype::F32,
            Primitive::Binary(op) => (fusible_binary(op) && t.dtype == Dtype::F32) || is_mask(t),
            Primitive::Select => {
                t.dtype == Dtype::F32
                    && matches!(t.inputs.first(), Some(Src::Node(j)) if is_mask(&nodes[*j]))
            }
            _ => false,
        };
        ok_op
            && t.inputs
                .iter()
                .all(|s| shape_of(s, &nodes).is_some_and(|m| fusible_operand(&m, &t.shape)))
    };
    // group[i] = the root node (consumer-most) of i's group.
    let mut group: Vec<Option<usize>> = vec![None; n];
    for i in (0..n).rev() {
        if !candidate(&nodes[i]) {
            continue;
        }
        let first = consumers[i].first().and_then(|&c| group[c]);
        let joined = match first {
            Some(g)
                if !is_output[i]
                    && consumers[i]
                        .iter()
                        .all(|&c| group[c] == Some(g) && nodes[c].shape == nodes[i].shape) =>
            {
                Some(g)
            }
            _ => None,
        };
        // A mask cannot be a group's output: it only joins.
        group[i] = if joined.is_none() && nodes[i].dtype != Dtype::F32 {
            None
        } else {
            Some(joined.unwrap_or(i))
        };
    }
    // A group whose external inputs are not all f32 (a mask computed outside it) is dissolved.
    let mut dissolve: Vec<usize> = Vec::new();
    for i in 0..n {
        let Some(r) = group[i] else { continue };
        let external_bad = nodes[i].inputs.iter().any(|s| {
            let inside = matches!(s, Src::Node(j) if group[*j] == Some(r));
            !inside && dtype_of(s) != Dtype::F32
        });
        if external_bad {
            dissolve.push(r);
        }
    }
    for g in group.iter_mut() {
        if g.is_some_and(|r| dissolve.contains(&r)) {
            *g = None;
        }
    }
    // Build the new node list: fused groups of 2+ nodes become one node at the root's position.
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, g) in group.iter().enumerate() {
        if let Some(r) = g {
            members.entry(*r).or_default().push(i);
        }
    }
    let mut new_nodes: Vec<TNode> = Vec::new();
    let mut remap: Vec<Option<usize>> = vec![None; n];
    let map_src = |s: &Src, remap: &[Option<usize>]| -> Src {
        match s {
            Src::Node(j) => Src::Node(remap[*j].unwrap_or(usize::MAX)),
            other => other.clone(),
        }
    };
    // A group's only consumer, when it is a Sum/Max/Min over the last axis, joins the group as
    // a trailing reduction: the elementwise result then never reaches memory. The fused kernel
    // reduces each row with the reduce kernel's own loop, so results stay bitwise equal; rows
    // of 2^16 or more are left to the reduce kernel, which may split them across threads.
    let mut absorb: Vec<Option<(usize, crate::primitive::ReduceOp)>> = vec![None; n];
    let mut absorbed = vec![false; n];
    for (r, ms) in &members {
        let r = *r;
        let [c] = consumers[r].as_slice() else {
            continue;
        };
        let last = nodes[r].shape.len().wrapping_sub(1);
        let len = nodes[r].shape.last().copied().unwrap_or(0);
        if is_output[r] || ms.is_empty() || !(2..1 << 16).contains(&len) {
            continue;
        }
        if let Primitive::Reduce { op, axes } = &nodes[*c].primitive
            && matches!(
                op,
                crate::primitive::ReduceOp::Sum
                    | crate::primitive::ReduceOp::Max
                    | crate::primitive::ReduceOp::Min
            )
            && axes.as_slice() == [last]
            && nodes[*c].dtype == Dtype::F32
            && group[*c].is_none()
        {
            absorb[r] = Some((*c, *op));
            absorbed[*c] = true;
        }
    }
    for i in 0..n {
        if absorbed[i] {
            continue; // emitted as its group's trailing reduction
        }
        let root = group[i];
        let fused_here = root == Some(i)
            && members
                .get(&i)
                .is_some_and(|m| m.len() >= 2 || absorb[i].is_some());
        if root.is_some()
            && root != Some(i)
            && members
                .get(&root.unwrap_or(i))
                .is_some_and(|m| m.len() >= 2 || absorb[root.unwrap_or(i)].is_some())
        {
            continue; // emitted inside its group's fused node
        }
        if !fused_here {
            let t = &nodes[i];
            new_nodes.push(TNode {
                primitive: t.primitive.clone(),
                inputs: t.inputs.iter().map(|s| map_src(s, &remap)).collect(),
                shape: t.shape.clone(),
                dtype: t.dtype,
            });
            remap[i] = Some(new_nodes.len() - 1);
            continue;
        }
        let ms = &members[&i]; // ascending: topological
        let mut ext: Vec<Src> = Vec::new();
        let mut reg_of: HashMap<usize, usize> = HashMap::new(); // member node -> register
        let mut steps: Vec<FusedStep> = Vec::new();
        // External inputs first (registers 0..), then one register per step.
        let ext_reg = |s: &Src, ext: &mut Vec<Src>| -> usize {
            let m = map_src(s, &remap);
            let same = |x: &Src| match (x, &m) {
                (Src::Input(a), Src::Input(b)) | (Src::Node(a), Src::Node(b)) => a == b,
                (Src::Const(a), Src::Const(b)) => a.same(b),
                _ => false,
            };
            match ext.iter().position(same) {
                Some(p) => p,
                None => {
                    ext.push(m);
                    ext.len() - 1
                }
            }
        };
        let mut pending: Vec<(usize, Vec<(bool, usize)>)> = Vec::new(); // (member, inputs: (is_member, id))
        for &mi in ms {
            let ins = nodes[mi]
                .inputs
                .iter()
                .map(|s| match s {
                    Src::Node(j) if group[*j] == Some(i) => (true, *j),
                    other => (false, ext_reg(other, &mut ext)),
                })
                .collect();
            pending.push((mi, ins));
        }
        let n_ext = ext.len();
        for (mi, ins) in pending {
            let r = |x: &(bool, usize)| if x.0 { reg_of[&x.1] } else { x.1 };
            let step = match nodes[mi].primitive {
                Primitive::Unary(op) => FusedStep::Unary(op, r(&ins[0])),
                Primitive::Binary(op) if op.returns_bool() => {
                    FusedStep::Compare(op, r(&ins[0]), r(&ins[1]))
                }
                Primitive::Binary(op) => FusedStep::Binary(op, r(&ins[0]), r(&ins[1])),
                Primitive::Select => FusedStep::Select(r(&ins[0]), r(&ins[1]), r(&ins[2])),
                _ => unreachable_step(),
            };
            steps.push(step);
            reg_of.insert(mi, n_ext + steps.len() - 1);
        }
        let tail = absorb[i];
        let prog = FusedProgram {
            n_inputs: n_ext,
            steps,
            reduce: tail.map(|(_, op)| (op, nodes[i].shape.last().copied().unwrap_or(1))),
        };
        new_nodes.push(TNode {
            primitive: Primitive::Fused(FusedRef(Arc::new(prog))),
            inputs: ext,
            shape: match tail {
                Some((c, _)) => nodes[c].shape.clone(),
                None => nodes[i].shape.clone(),
            },
            dtype: Dtype::F32,
        });
        let at = new_nodes.len() - 1;
        for &mi in ms {
            remap[mi] = Some(at);
        }
        if let Some((c, _)) = tail {
            remap[c] = Some(at);
        }
    }
    let outputs = outputs.iter().map(|s| map_src(s, &remap)).collect();
    Plan {
        nodes: new_nodes,
        outputs,
        input_shapes: Vec::new(),
    }
}

/// Only unary, binary and select nodes are candidates, so other primitives never reach a group.
fn unreachable_step() -> FusedStep {
    FusedStep::Unary(UnaryOp::Abs, 0)
}

/// The program written back as ordinary ops on `inputs` (for derivatives and batching).
pub fn expand_fused(prog: &FusedProgram, inputs: &[Array]) -> Result<Array> {
    if inputs.len() != prog.n_inputs {
        return Err(Error::Invalid {
            op: "fused",
            msg: "wrong number of inputs".into(),
        });
    }
    let mut regs: Vec<Array> = inputs.to_vec();
    for step in &prog.steps {
        let r = match *step {
            FusedStep::Unary(op, a) => {
                let x = &regs[a];
                Array::lazy(
                    Primitive::Unary(op),
                    vec![x.clone()],
                    x.shape().to_vec(),
                    x.dtype(),
                )
            }
            FusedStep::Binary(op, a, b) | FusedStep::Compare(op, a, b) => {
                crate::ops::binary(op, &regs[a], &regs[b])?
            }
            FusedStep::Select(c, x, y) => crate::ops::where_(&regs[c], &regs[x], &regs[y])?,
        };
        regs.push(r);
    }
    let out = regs.pop().ok_or_else(|| Error::Invalid {
        op: "fused",
        msg: "empty program".into(),
    })?;
    match prog.reduce {
        None => Ok(out),
        Some((op, _)) => {
            let last = out.ndim().saturating_sub(1);
            let mut shape = out.shape().to_vec();
            if let Some(d) = shape.last_mut() {
                *d = 1;
            }
            Ok(Array::lazy(
                Primitive::Reduce {
                    op,
                    axes: vec![last],
                },
                vec![out],
                shape,
                Dtype::F32,
            ))
        }
    }
}
