//! Graph evaluation: a topological order of the unevaluated nodes, then one backend call per
//! node on the calling thread.
//!
//! Prefetch: the walk also notes which nodes stream an already computed input (a product's
//! weights, [`crate::Primitive::streamed_input`]); while the nodes before one of them run, its
//! backend is told the weights' address so that idle cores can start reading them
//! ([`crate::backend::Backend::prefetch`]).
//!
//! Memory: the order is consumed as it runs, and each node drops its inputs once computed, so an
//! intermediate result is freed as soon as its last consumer has run. An input whose node is held
//! only by the consumer being run hands its data over, so the kernel may write in place
//! (donation).

use crate::array::Array;
use crate::error::Result;
use crate::layout::ArrayData;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

static TRAVERSAL: AtomicU64 = AtomicU64::new(1);

/// While > 0 (a gradient is being traced), evaluated nodes keep their primitive and inputs so
/// the backward pass can still walk the graph, and no input is donated.
pub(crate) static RETAIN_GRAPH: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Serialises evaluation: one graph runs at a time (the async worker and callers share it).
static EVAL_LOCK: Mutex<()> = Mutex::new(());

/// Evaluates `outputs` and everything they depend on.
pub fn eval(outputs: &[Array]) -> Result<()> {
    if outputs.iter().all(|a| a.is_evaluated()) {
        return Ok(());
    }
    // A custom op's kernel evaluates its own graph from inside an evaluation: this thread then
    // already holds the lock.
    if IN_EVAL.with(|f| f.get()) {
        return run(topological_order(outputs));
    }
    let _guard = EVAL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    IN_EVAL.with(|f| f.set(true));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_EVAL.with(|f| f.set(false));
        }
    }
    let _reset = Reset;
    let profile = crate::profile::enabled();
    let start = profile.then(std::time::Instant::now);
    // Eager-style code evaluates one op whose inputs are ready: no graph walk, and the node is
    // taken under the same lock that checked it (no plan, no handle cloned).
    let one_ready = match outputs {
        [one] => take_ready(one)
            .map(|(primitive, inputs)| run_node(one, primitive, inputs, retaining(), profile)),
        _ => None,
    };
    let r = one_ready.unwrap_or_else(|| run(topological_order(outputs)));
    if let Some(t0) = start {
        crate::profile::record_eval(t0.elapsed());
    }
    r
}

thread_local! {
    static IN_EVAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Starts evaluating `outputs` on a background thread and returns at once. A later `eval` (or
/// reading the data) waits for it. Errors are reported by that later `eval`.
pub fn async_eval(outputs: &[Array]) {
    static WORKER: OnceLock<Mutex<Sender<Vec<Array>>>> = OnceLock::new();
    let sender = WORKER.get_or_init(|| {
        let (tx, rx) = channel::<Vec<Array>>();
        let spawned = std::thread::Builder::new()
            .name("tessera-async-eval".into())
            .spawn(move || {
                while let Ok(arrays) = rx.recv() {
                    // An error leaves the nodes unevaluated; the caller's next eval reports it.
                    let _ = eval(&arrays);
                }
            });
        if spawned.is_err() {
            // No thread: async_eval degrades to doing nothing now; eval later does the work.
        }
        Mutex::new(tx)
    });
    let tx = sender.lock().unwrap_or_else(|e| e.into_inner());
    let _ = tx.send(outputs.to_vec());
}

/// Waits until all work queued on the CPU stream is done.
pub fn synchronize() -> Result<()> {
    if IN_EVAL.with(|f| f.get()) {
        return Ok(());
    }
    let _guard = EVAL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Ok(())
}

/// Nodes in evaluation order. Inline room for the small graphs of eager-style code (one op,
/// then eval), so those allocate nothing here.
type Order = SmallVec<[Array; 8]>;

/// What [`run`] walks: the nodes, and where among them inputs are streamed (in order).
struct Plan {
    order: Order,
    reads: Vec<StreamedRead>,
}

/// The node at `at` in the order will stream the `len` bytes at `addr` on `device`.
#[derive(Clone, Copy)]
struct StreamedRead {
    at: usize,
    addr: usize,
    len: usize,
    device: crate::stream::Device,
}

/// The bytes a streamed input spans, when they are known before the graph runs: `a`'s data,
/// or, for a transpose still to run (`x @ w.T` with a dense `w`), its input's. Only data that
/// covers its bytes densely counts (any order of axes; not a sliced or broadcast view):
/// (address, length).
fn streamed_bytes(a: &Array) -> Option<(usize, usize)> {
    let st = a.node.lock();
    if st.is_pending_op() {
        let source = match st.primitive {
            Some(crate::Primitive::Transpose(_)) => st.inputs.first()?.clone(),
            _ => return None,
        };
        drop(st);
        let st = source.node.lock();
        return dense_bytes(st.data.get(source.output as usize)?);
    }
    dense_bytes(st.data.get(a.output as usize)?)
}

fn dense_bytes(d: &ArrayData) -> Option<(usize, usize)> {
    let (lo, hi) = d.layout.extent();
    let size = d.size();
    if size == 0 || lo < 0 || (hi - lo + 1) as usize != size {
        return None;
    }
    let elem = d.dtype.size();
    Some((d.buffer.as_ptr() as usize + lo as usize * elem, size * elem))
}

/// A step of the walk: enter a node, or emit it (its inputs done) with its streamed input.
enum Visit {
    Enter,
    Emit(Option<Array>),
}

/// When `a` is an unevaluated op whose inputs are all evaluated: its primitive and inputs,
/// taken out of the node to run it (see [`run_node`]).
fn take_ready(a: &Array) -> Option<(crate::Primitive, crate::array::Inputs)> {
    let mut st = a.node.lock();
    if !(st.is_pending_op() && st.inputs.iter().all(Array::is_evaluated)) {
        return None;
    }
    let primitive = st.primitive.take()?;
    Some((primitive, std::mem::take(&mut st.inputs)))
}

/// Post-order DFS without recursion; each unevaluated node appears once, after its inputs.
fn topological_order(outputs: &[Array]) -> Plan {
    let id = TRAVERSAL.fetch_add(1, Ordering::Relaxed);
    let mut order = Order::new();
    let mut reads = Vec::new();
    let mut stack: SmallVec<[(Array, Visit); 16]> = outputs
        .iter()
        .rev()
        .map(|a| (a.clone(), Visit::Enter))
        .collect();
    while let Some((a, visit)) = stack.pop() {
        if let Visit::Emit(streamed) = visit {
            // The input's lock is taken after its consumer's is released (never both held).
            if let Some((addr, len)) = streamed.as_ref().and_then(streamed_bytes) {
                reads.push(StreamedRead {
                    at: order.len(),
                    addr,
                    len,
                    device: a.node.stream.device,
                });
            }
            order.push(a);
            continue;
        }
        if a.node.visit.swap(id, Ordering::Relaxed) == id {
            continue;
        }
        let st = a.node.lock();
        if !st.is_pending_op() {
            continue;
        }
        // Evaluated inputs (most of them, in eager-style code) are skipped without a clone or
        // a lock: each of those is an atomic operation, and they were most of this function's
        // time on a one-op graph.
        let pending: SmallVec<[Array; 3]> = st
            .inputs
            .iter()
            .rev()
            .filter(|i| !i.is_evaluated())
            .cloned()
            .collect();
        let streamed = st
            .primitive
            .as_ref()
            .and_then(|p| p.streamed_input())
            .and_then(|i| st.inputs.get(i))
            .cloned();
        drop(st);
        stack.push((a, Visit::Emit(streamed)));
        stack.extend(pending.into_iter().map(|i| (i, Visit::Enter)));
    }
    Plan { order, reads }
}

/// Whether evaluated nodes must keep their primitive and inputs (see [`RETAIN_GRAPH`]).
fn retaining() -> bool {
    RETAIN_GRAPH.load(Ordering::Relaxed) > 0
}

fn run(plan: Plan) -> Result<()> {
    let (retain, profile) = (retaining(), crate::profile::enabled());
    let Plan { order, reads } = plan;
    // Each streamed read is named to its backend once, when the previous one's node starts
    // (or the walk does): threads that finish that product early fetch it, then idle ones
    // while the serial nodes between run.
    let mut next_read = 0;
    let mut named = usize::MAX;
    for (at, a) in order.into_iter().enumerate() {
        while reads.get(next_read).is_some_and(|r| r.at <= at) {
            next_read += 1;
        }
        if let Some(r) = reads.get(next_read).filter(|_| named != next_read) {
            named = next_read;
            crate::backend::for_device(r.device).prefetch(r.addr, r.len);
        }
        let (primitive, inputs) = {
            let mut st = a.node.lock();
            match st.primitive.take() {
                Some(p) => (p, std::mem::take(&mut st.inputs)),
                None => continue,
            }
        };
        run_node(&a, primitive, inputs, retain, profile)?;
    }
    Ok(())
}

/// Runs one node whose primitive and inputs were taken out of it: gathers the inputs' data
/// (taking it where this node holds the only handle: donation), calls the backend, and stores
/// the result (or puts everything back on failure).
fn run_node(
    a: &Array,
    primitive: crate::Primitive,
    inputs: crate::array::Inputs,
    retain: bool,
    profile: bool,
) -> Result<()> {
    let node = &a.node;
    // Inline storage: most nodes have at most three inputs, and with `Layout`'s inline dims
    // gathering them allocates nothing.
    let mut in_data: SmallVec<[ArrayData; 3]> = SmallVec::new();
    let mut donated: SmallVec<[usize; 3]> = SmallVec::new();
    for (i, inp) in inputs.iter().enumerate() {
        let mut st = inp.node.lock();
        // Held only by this consumer: take the data so the kernel may reuse its buffer.
        if !retain && Arc::strong_count(&inp.node) == 1 && st.data.len() == 1 {
            if let Some(d) = st.data.pop() {
                in_data.push(d);
            }
            inp.node.done.store(false, Ordering::Release);
            donated.push(i);
        } else {
            match st.data.get(inp.output as usize) {
                Some(d) => in_data.push(d.clone()),
                None => {
                    drop(st);
                    restore(node, primitive, inputs, &in_data, &donated);
                    return Err(crate::Error::Invalid {
                        op: "eval",
                        msg: "an input was not evaluated (a failed earlier evaluation?)".into(),
                    });
                }
            }
        }
    }
    let backend = crate::backend::for_device(node.stream.device);
    let t0 = profile.then(std::time::Instant::now);
    let result = backend.eval(&node.stream, &primitive, &in_data, &node.outputs);
    if let Some(t0) = t0 {
        let shape = node.outputs.first().map_or(&[][..], |m| &m.shape[..]);
        crate::profile::record_kernel(&primitive, shape, t0.elapsed());
    }
    match result {
        Ok(out) => {
            drop(in_data);
            let mut st = node.lock();
            st.data = out;
            node.done.store(true, Ordering::Release);
            if retain {
                st.primitive = Some(primitive);
                st.inputs = inputs;
            } else {
                drop(st);
                drop(inputs);
            }
        }
        Err(e) => {
            restore(node, primitive, inputs, &in_data, &donated);
            return Err(e);
        }
    }
    Ok(())
}

/// Puts a node back as it was after a failed kernel, so the process stays usable and the same
/// graph can be evaluated again (say, after freeing memory).
fn restore(
    node: &crate::array::Node,
    primitive: crate::Primitive,
    inputs: crate::array::Inputs,
    in_data: &[ArrayData],
    donated: &[usize],
) {
    for &i in donated {
        inputs[i].node.lock().data = smallvec::smallvec![in_data[i].clone()];
        inputs[i].node.done.store(true, Ordering::Release);
    }
    let mut st = node.lock();
    st.primitive = Some(primitive);
    st.inputs = inputs;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops;

    fn data_bytes(a: &Array) -> (usize, usize) {
        let st = a.node.lock();
        let d = &st.data[0];
        (d.ptr::<u8>() as usize, d.size() * d.dtype.size())
    }

    #[test]
    fn the_walk_names_the_weights_a_product_streams() {
        let x = Array::from_slice(&[0.5f32; 8], &[1, 8]).unwrap();
        let values: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let w = Array::from_slice(&values, &[4, 8]).unwrap();
        // exp, transpose, matmul: the product reads w's bytes through the transpose.
        let h = ops::exp(&x).unwrap();
        let y = ops::matmul(&h, &ops::transpose(&w, None).unwrap()).unwrap();
        let plan = topological_order(std::slice::from_ref(&y));
        assert_eq!(plan.order.len(), 3);
        assert_eq!(plan.reads.len(), 1);
        let read = plan.reads[0];
        assert_eq!(read.at, 2);
        assert_eq!((read.addr, read.len), data_bytes(&w));
        // The hint changes nothing about the result.
        eval(std::slice::from_ref(&y)).unwrap();
        let e = 0.5f32.exp();
        let want: Vec<f32> = (0..4)
            .map(|r| (0..8).map(|c| e * (r * 8 + c) as f32).sum())
            .collect();
        let got = y.to_vec::<f32>().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * w.abs(), "{got:?} vs {want:?}");
        }

        // A computed slice of w does not cover its bytes densely: not named.
        let part = ops::slice(&w, &[0, 0], &[4, 4], &[1, 1]).unwrap();
        part.eval().unwrap();
        let x4 = Array::from_slice(&[1f32; 4], &[1, 4]).unwrap();
        let y2 = ops::matmul(&x4, &ops::transpose(&part, None).unwrap()).unwrap();
        assert!(topological_order(&[y2]).reads.is_empty());
        // Nor an input computed by the graph itself.
        let y3 = ops::matmul(&x, &ops::transpose(&ops::exp(&w).unwrap(), None).unwrap()).unwrap();
        assert!(topological_order(&[y3]).reads.is_empty());
    }
}
