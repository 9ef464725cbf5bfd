//! Graph evaluation: a topological order of the unevaluated nodes, then one backend call per
//! node on the calling thread.
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
    let start = crate::profile::enabled().then(std::time::Instant::now);
    let order = match outputs {
        // Eager-style code evaluates one op whose inputs are ready: no graph walk.
        [one] if ready_to_run(one) => smallvec::smallvec![one.clone()],
        _ => topological_order(outputs),
    };
    let r = run(order);
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

/// True when `a` is an unevaluated op whose inputs are all evaluated.
fn ready_to_run(a: &Array) -> bool {
    let st = a.node.lock();
    st.is_pending_op() && st.inputs.iter().all(Array::is_evaluated)
}

/// Post-order DFS without recursion; each unevaluated node appears once, after its inputs.
fn topological_order(outputs: &[Array]) -> Order {
    let id = TRAVERSAL.fetch_add(1, Ordering::Relaxed);
    let mut order = Order::new();
    let mut stack: SmallVec<[(Array, bool); 16]> =
        outputs.iter().rev().map(|a| (a.clone(), false)).collect();
    while let Some((a, expanded)) = stack.pop() {
        if expanded {
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
        drop(st);
        stack.push((a, true));
        stack.extend(pending.into_iter().map(|i| (i, false)));
    }
    order
}

fn run(order: Order) -> Result<()> {
    let retain = RETAIN_GRAPH.load(Ordering::Relaxed) > 0;
    let profile = crate::profile::enabled();
    for a in order {
        let node = &a.node;
        let (primitive, inputs) = {
            let mut st = node.lock();
            match st.primitive.take() {
                Some(p) => (p, std::mem::take(&mut st.inputs)),
                None => continue,
            }
        };
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
