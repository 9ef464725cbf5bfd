//! Differentiation: reverse mode (`vjp`, `grad`, `value_and_grad`) and forward mode (`jvp`).
//!
//! The lazy graph is the tape. The primals are wrapped in fresh identity nodes (tracers), the
//! function builds its graph on them, and the backward pass walks that graph from the outputs
//! to the tracers applying each primitive's rule (`primitive/vjp.rs`). Rules are written with
//! the public ops, so gradients are lazy graphs too and can be differentiated again.
//!
//! Forward mode traces the function the same way, then walks the graph the other way, from the
//! tracers toward the outputs in topological order, giving each node that depends on a tracer
//! its output tangent by the primitive's forward rule (`primitive/jvp.rs`): one forward pass.
//!
//! While tracing, evaluation keeps each node's primitive and inputs (`RETAIN_GRAPH`), so a
//! function may evaluate intermediates (to print or branch on them) without cutting the graph.

use super::eval::RETAIN_GRAPH;
use super::{depends, node_key as key, tracer};
use crate::array::{Array, Node};
use crate::error::{Error, Result, fmt_shape};
use crate::ops;
use crate::primitive::Primitive;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

struct RetainGuard;
impl RetainGuard {
    fn new() -> RetainGuard {
        RETAIN_GRAPH.fetch_add(1, Ordering::SeqCst);
        RetainGuard
    }
}
impl Drop for RetainGuard {
    fn drop(&mut self) {
        RETAIN_GRAPH.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Checks that `given` matches `reference` in count and shapes (cotangents for outputs,
/// tangents for primals).
fn check_pairs(
    op: &'static str,
    what: &str,
    of: &str,
    reference: &[Array],
    given: &[Array],
) -> Result<()> {
    if reference.len() != given.len() {
        return Err(Error::Invalid {
            op,
            msg: format!("{} {of}s but {} {what}s", reference.len(), given.len()),
        });
    }
    for (r, g) in reference.iter().zip(given) {
        if r.shape() != g.shape() {
            return Err(Error::Invalid {
                op,
                msg: format!(
                    "{what} of shape {} for {of} of shape {}",
                    fmt_shape(g.shape()),
                    fmt_shape(r.shape())
                ),
            });
        }
    }
    Ok(())
}

/// Evaluates `f(primals)` and the vector-Jacobian product with `cotangents` (one per output,
/// same shapes). Returns (outputs, cotangents of the primals). Integer and bool primals get zero
/// cotangents.
pub fn vjp(
    f: impl FnOnce(&[Array]) -> Result<Vec<Array>>,
    primals: &[Array],
    cotangents: &[Array],
) -> Result<(Vec<Array>, Vec<Array>)> {
    vjp_with(f, primals, |outputs| {
        check_pairs("vjp", "cotangent", "output", outputs, cotangents)?;
        Ok(cotangents.to_vec())
    })
}

/// `vjp` where the cotangents are made from the outputs once they are known.
fn vjp_with(
    f: impl FnOnce(&[Array]) -> Result<Vec<Array>>,
    primals: &[Array],
    make_cotangents: impl FnOnce(&[Array]) -> Result<Vec<Array>>,
) -> Result<(Vec<Array>, Vec<Array>)> {
    let _retain = RetainGuard::new();
    let tracers: Vec<Array> = primals.iter().map(tracer).collect();
    let outputs = f(&tracers)?;
    let cotangents = make_cotangents(&outputs)?;
    let grads = backward(&tracers, &outputs, &cotangents)?;
    Ok((outputs, grads))
}

thread_local! {
    /// Arrays the rules of the running backward pass made for their side effect only (the
    /// send that returns a received array's cotangent to its sender).
    static SIDE_EFFECTS: std::cell::RefCell<Vec<Vec<Array>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Registers `a` with the innermost running backward pass: every gradient it returns will
/// depend on `a`, so evaluating any of them evaluates `a`.
pub(crate) fn side_effect(a: Array) {
    SIDE_EFFECTS.with(|s| {
        if let Some(top) = s.borrow_mut().last_mut() {
            top.push(a);
        }
    });
}

/// Pops the side-effect frame of a backward pass, also when it fails.
struct SideEffectFrame;

impl SideEffectFrame {
    fn push() -> SideEffectFrame {
        SIDE_EFFECTS.with(|s| s.borrow_mut().push(Vec::new()));
        SideEffectFrame
    }
    fn take(&self) -> Vec<Array> {
        SIDE_EFFECTS.with(|s| {
            s.borrow_mut()
                .last_mut()
                .map(std::mem::take)
                .unwrap_or_default()
        })
    }
}

impl Drop for SideEffectFrame {
    fn drop(&mut self) {
        SIDE_EFFECTS.with(|s| {
            s.borrow_mut().pop();
        });
    }
}

/// Whether a node receives a point-to-point message: the backward pass visits it even when no
/// tracer lies below it, because its rule sends the cotangent back to the sender.
fn is_receive(a: &Array) -> bool {
    matches!(
        a.node.lock().primitive,
        Some(Primitive::Collective {
            op: crate::collective::CollectiveOp::Recv { .. },
            ..
        })
    )
}

/// The backward walk: reverse topological order over nodes that depend on a tracer (and the
/// receives of point-to-point messages, whose cotangents go back to their senders).
fn backward(tracers: &[Array], outputs: &[Array], cotangents: &[Array]) -> Result<Vec<Array>> {
    let frame = SideEffectFrame::push();
    let grads = backward_walk(tracers, outputs, cotangents)?;
    let effects = frame.take();
    if effects.is_empty() {
        return Ok(grads);
    }
    Ok(grads.iter().map(|g| depends(g, &effects)).collect())
}

fn backward_walk(tracers: &[Array], outputs: &[Array], cotangents: &[Array]) -> Result<Vec<Array>> {
    let tracer_keys: HashSet<*const Node> = tracers.iter().map(key).collect();
    // Post-order DFS from the outputs, not descending past tracers; `depends` marks nodes with a
    // tracer below them.
    let mut order: Vec<Array> = Vec::new();
    let mut depends: HashSet<*const Node> = HashSet::new();
    let mut visited: HashSet<*const Node> = HashSet::new();
    let mut stack: Vec<(Array, bool)> = outputs.iter().map(|o| (o.clone(), false)).collect();
    while let Some((a, expanded)) = stack.pop() {
        let k = key(&a);
        if expanded {
            let dep = tracer_keys.contains(&k)
                || is_receive(&a)
                || a.node
                    .lock()
                    .inputs
                    .iter()
                    .any(|i| depends.contains(&key(i)));
            if dep {
                depends.insert(k);
                order.push(a);
            }
            continue;
        }
        if !visited.insert(k) {
            continue;
        }
        let inputs = if tracer_keys.contains(&k) {
            Default::default()
        } else {
            a.node.lock().inputs.clone()
        };
        stack.push((a, true));
        stack.extend(inputs.into_iter().map(|i| (i, false)));
    }
    let mut cts: HashMap<*const Node, Array> = HashMap::new();
    let accumulate =
        |k: *const Node, g: Array, cts: &mut HashMap<*const Node, Array>| -> Result<()> {
            let g = match cts.remove(&k) {
                Some(prev) => ops::add(&prev, &g)?,
                None => g,
            };
            cts.insert(k, g);
            Ok(())
        };
    for (o, c) in outputs.iter().zip(cotangents) {
        accumulate(key(o), c.astype(o.dtype().at_least_float())?, &mut cts)?;
    }
    for a in order.iter().rev() {
        let k = key(a);
        if tracer_keys.contains(&k) {
            continue;
        }
        let ct = match cts.remove(&k) {
            Some(ct) => ct,
            // A receive still answers its sender, whose backward pass waits for a cotangent.
            None if is_receive(a) && a.dtype().is_float() => ops::zeros(a.shape(), a.dtype())?,
            None => continue,
        };
        let (primitive, inputs) = {
            let st = a.node.lock();
            match &st.primitive {
                Some(p) => (p.clone(), st.inputs.clone()),
                None => continue,
            }
        };
        let grads = crate::primitive::vjp::vjp(&primitive, &inputs, a, &ct)?;
        for (inp, g) in inputs.iter().zip(grads) {
            if let Some(g) = g.filter(|_| depends.contains(&key(inp))) {
                accumulate(key(inp), g.astype(inp.dtype())?, &mut cts)?;
            }
        }
    }
    tracers
        .iter()
        .map(|t| match cts.remove(&key(t)) {
            Some(g) => Ok(g),
            None => ops::zeros(t.shape(), t.dtype().at_least_float()),
        })
        .collect()
}

/// The value of a scalar function and its gradient with respect to every argument.
/// ```
/// use tessera_core::{Array, ops, transforms::value_and_grad};
/// let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
/// // f(x) = sum(x^2): df/dx = 2x
/// let (v, g) = value_and_grad(|a| ops::sum(&ops::square(&a[0])?, ops::Axes::All, false), &[x]).unwrap();
/// assert_eq!(v.item::<f32>().unwrap(), 14.0);
/// assert_eq!(g[0].to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0]);
/// ```
pub fn value_and_grad(
    f: impl FnOnce(&[Array]) -> Result<Array>,
    primals: &[Array],
) -> Result<(Array, Vec<Array>)> {
    let (outs, grads) = vjp_with(
        |xs| Ok(vec![f(xs)?]),
        primals,
        |outs| {
            let y = &outs[0];
            if y.size() != 1 {
                return Err(Error::Invalid {
                    op: "grad",
                    msg: format!(
                        "the function must return a single value, got shape {}",
                        fmt_shape(y.shape())
                    ),
                });
            }
            Ok(vec![ops::ones(y.shape(), y.dtype().at_least_float())?])
        },
    )?;
    Ok((outs[0].clone(), grads))
}

/// Gradient of a scalar function with respect to every argument.
pub fn grad(f: impl FnOnce(&[Array]) -> Result<Array>, primals: &[Array]) -> Result<Vec<Array>> {
    Ok(value_and_grad(f, primals)?.1)
}

/// Forward-mode product `J(primals) · tangents`, in one forward pass: `f` is traced on the
/// primals (wrapped in tracers, as in [`vjp`]), then its graph is walked in topological order
/// from the tracers, and each node that depends on one gets its output tangent from its inputs'
/// tangents by that primitive's forward rule (`primitive/jvp.rs`). No backward graph is built.
/// Tangents are lazy graphs written with ops, so they can be differentiated again (jvp of jvp,
/// vjp of jvp), batched and compiled.
///
/// `tangents` holds one array per primal, of the same shape (cast to the primal's dtype);
/// integer and bool primals carry no tangent. Returns (outputs, output tangents); an output that
/// does not depend on a float primal gets a zero tangent (at least float32).
/// ```
/// use tessera_core::{Array, ops, transforms::jvp};
/// // d/dx sin(x) · t = cos(x) t
/// let x = Array::from_slice(&[0.5f64, 1.0], &[2]).unwrap();
/// let t = Array::from_slice(&[1.0f64, 2.0], &[2]).unwrap();
/// let (y, dy) = jvp(|a| Ok(vec![ops::sin(&a[0])?]), &[x], &[t]).unwrap();
/// let dy = dy[0].to_vec::<f64>().unwrap();
/// assert!((dy[0] - 0.5f64.cos()).abs() < 1e-15 && (dy[1] - 2.0 * 1f64.cos()).abs() < 1e-15);
/// assert!((y[0].to_vec::<f64>().unwrap()[1] - 1f64.sin()).abs() < 1e-15);
/// ```
pub fn jvp(
    f: impl FnOnce(&[Array]) -> Result<Vec<Array>>,
    primals: &[Array],
    tangents: &[Array],
) -> Result<(Vec<Array>, Vec<Array>)> {
    check_pairs("jvp", "tangent", "primal", primals, tangents)?;
    let given: Vec<Option<Array>> = tangents.iter().cloned().map(Some).collect();
    let (outputs, out_tangents) = jvp_partial(f, primals, &given)?;
    let out_tangents = outputs
        .iter()
        .zip(out_tangents)
        .map(|(o, t)| match t {
            Some(t) => Ok(t),
            None => ops::zeros(o.shape(), o.dtype().at_least_float()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((outputs, out_tangents))
}

/// [`jvp`] with optional tangents (`None`: zero, no work) and optional output tangents (`None`:
/// zero, or not a float output). Rules that differentiate a composite (custom ops, fused nodes,
/// attention) call it.
pub(crate) fn jvp_partial(
    f: impl FnOnce(&[Array]) -> Result<Vec<Array>>,
    primals: &[Array],
    tangents: &[Option<Array>],
) -> Result<(Vec<Array>, Vec<Option<Array>>)> {
    let _retain = RetainGuard::new();
    let tracers: Vec<Array> = primals.iter().map(tracer).collect();
    let outputs = f(&tracers)?;
    let out_tangents = forward(&tracers, tangents, &outputs)?;
    Ok((outputs, out_tangents))
}

/// The forward walk: topological order over the graph behind the outputs (not past the
/// tracers), propagating tangents through every node that has an input with a tangent. Point-
/// to-point messages carry tangents too: a send also sends its input's tangent (zeros when it
/// has none), a receive receives one; those sends become dependencies of every output tangent.
fn forward(
    tracers: &[Array],
    tangents: &[Option<Array>],
    outputs: &[Array],
) -> Result<Vec<Option<Array>>> {
    let frame = SideEffectFrame::push();
    let out = forward_walk(tracers, tangents, outputs)?;
    let effects = frame.take();
    if effects.is_empty() {
        return Ok(out);
    }
    out.into_iter()
        .zip(outputs)
        .map(|(t, o)| {
            let t = match t {
                Some(t) => t,
                None if o.dtype().is_float() => ops::zeros(o.shape(), o.dtype())?,
                None => return Ok(None),
            };
            Ok(Some(depends(&t, &effects)))
        })
        .collect()
}

fn forward_walk(
    tracers: &[Array],
    tangents: &[Option<Array>],
    outputs: &[Array],
) -> Result<Vec<Option<Array>>> {
    let tracer_keys: HashSet<*const Node> = tracers.iter().map(key).collect();
    let mut tan: HashMap<*const Node, Array> = HashMap::new();
    for (x, t) in tracers.iter().zip(tangents) {
        if let Some(t) = t.as_ref().filter(|_| x.dtype().is_float()) {
            tan.insert(key(x), t.astype(x.dtype())?);
        }
    }
    // Post-order DFS from the outputs: every node comes after its inputs. (With no tangent at
    // all the walk still runs, for the messages that must carry zero tangents.)
    let mut order: Vec<Array> = Vec::new();
    let mut visited: HashSet<*const Node> = HashSet::new();
    let mut stack: Vec<(Array, bool)> = outputs.iter().map(|o| (o.clone(), false)).collect();
    while let Some((a, expanded)) = stack.pop() {
        if expanded {
            order.push(a);
            continue;
        }
        let k = key(&a);
        if !visited.insert(k) || tracer_keys.contains(&k) {
            continue;
        }
        let inputs = a.node.lock().inputs.clone();
        if inputs.is_empty() && !is_receive(&a) {
            continue;
        }
        stack.push((a, true));
        stack.extend(inputs.into_iter().map(|i| (i, false)));
    }
    for a in &order {
        let (primitive, inputs) = {
            let st = a.node.lock();
            match &st.primitive {
                Some(p) => (p.clone(), st.inputs.clone()),
                None => continue,
            }
        };
        let ts: Vec<Option<Array>> = inputs.iter().map(|i| tan.get(&key(i)).cloned()).collect();
        if let Primitive::Collective { op, group } = &primitive {
            use crate::collective::CollectiveOp::{Recv, Send};
            match *op {
                // The sender's tangent, received after the value itself.
                Recv { src } if a.dtype().is_float() => {
                    tan.insert(key(a), ops::recv_like(a, src, group)?);
                    continue;
                }
                // The value's tangent goes along (zeros when it has none), after the value.
                Send { dst } if a.dtype().is_float() => {
                    let t = match &ts[0] {
                        Some(t) => t.clone(),
                        None => ops::zeros(a.shape(), a.dtype())?,
                    };
                    side_effect(ops::send(
                        &depends(&t, std::slice::from_ref(a)),
                        dst,
                        group,
                    )?);
                    tan.insert(key(a), t);
                    continue;
                }
                _ => {}
            }
        }
        if ts.iter().all(Option::is_none) {
            continue;
        }
        if let Some(t) = crate::primitive::jvp::jvp(&primitive, &inputs, a, &ts)? {
            tan.insert(key(a), t);
        }
    }
    Ok(outputs.iter().map(|o| tan.get(&key(o)).cloned()).collect())
}

/// `J · t` for a function known only by its pullback `u -> Jᵀ u` (a custom op's own VJP, one
/// cotangent per input): the pullback is linear in `u`, so its VJP with the tangents as
/// cotangents is `J · t` (one reverse pass over the pullback's graph). `Ok(None)` when
/// `pullback` has no rule (returns `None`) or no tangent is given.
pub(crate) fn transpose_pullback(
    pullback: impl FnOnce(&Array) -> Option<Result<Vec<Array>>>,
    name: &str,
    inputs: &[Array],
    out: &Array,
    tangents: &[Option<Array>],
) -> Result<Option<Array>> {
    let _retain = RetainGuard::new();
    let u = tracer(&ops::zeros(out.shape(), out.dtype().at_least_float())?);
    let Some(cts) = pullback(&u) else {
        return Ok(None);
    };
    let cts = cts?;
    if cts.len() != inputs.len() {
        return Err(Error::Invalid {
            op: "jvp",
            msg: format!(
                "custom op {name}: its vjp returned {} cotangents for {} inputs",
                cts.len(),
                inputs.len()
            ),
        });
    }
    let (mut outs, mut seeds) = (Vec::new(), Vec::new());
    for ((c, i), t) in cts.into_iter().zip(inputs).zip(tangents) {
        let Some(t) = t else { continue };
        if c.shape() != i.shape() {
            return Err(Error::Invalid {
                op: "jvp",
                msg: format!(
                    "custom op {name}: its vjp returned a cotangent of shape {} for an input of shape {}",
                    fmt_shape(c.shape()),
                    fmt_shape(i.shape())
                ),
            });
        }
        outs.push(c);
        seeds.push(t.clone());
    }
    if outs.is_empty() {
        return Ok(None);
    }
    let mut g = backward(std::slice::from_ref(&u), &outs, &seeds)?;
    Ok(g.pop())
}

/// Named parameters, as models hold them (`"layers.0.weight"` and so on).
pub type Params = std::collections::BTreeMap<String, Array>;

/// Value and gradient of a scalar function of named parameters; the gradients come back under
/// the same names.
/// ```
/// use tessera_core::{Array, ops, transforms::{Params, value_and_grad_params}};
/// let mut p = Params::new();
/// p.insert("w".into(), Array::from_slice(&[2.0f32], &[1]).unwrap());
/// p.insert("b".into(), Array::from_slice(&[1.0f32], &[1]).unwrap());
/// // loss = sum((3w + b)^2) at w=2, b=1: 49; d/dw = 2*7*3 = 42, d/db = 14
/// let (v, g) = value_and_grad_params(|p| {
///     let y = ops::add(&ops::multiply(&p["w"], &Array::scalar(3.0f32))?, &p["b"])?;
///     ops::sum(&ops::square(&y)?, ops::Axes::All, false)
/// }, &p).unwrap();
/// assert_eq!(v.item::<f32>().unwrap(), 49.0);
/// assert_eq!(g["w"].item::<f32>().unwrap(), 42.0);
/// assert_eq!(g["b"].item::<f32>().unwrap(), 14.0);
/// ```
pub fn value_and_grad_params(
    f: impl FnOnce(&Params) -> Result<Array>,
    params: &Params,
) -> Result<(Array, Params)> {
    let names: Vec<String> = params.keys().cloned().collect();
    let values: Vec<Array> = params.values().cloned().collect();
    let (v, grads) = value_and_grad(
        |xs| {
            let traced: Params = names.iter().cloned().zip(xs.iter().cloned()).collect();
            f(&traced)
        },
        &values,
    )?;
    Ok((v, names.into_iter().zip(grads).collect()))
}
