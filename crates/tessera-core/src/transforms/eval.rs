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
use crate::backend::Delivered;
use crate::error::Result;
use crate::layout::ArrayData;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

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
    // run under the same lock that checked it (no plan, no handle cloned).
    let one_ready = match outputs {
        [one] => {
            let st = one.node.lock();
            if st.is_pending_op() && st.inputs.iter().all(Array::is_evaluated) {
                Some(run_node(&one.node, st, retaining(), profile))
            } else {
                None
            }
        }
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
        let st = a.node.lock();
        if st.is_pending_op() {
            run_node(&a.node, st, retain, profile)?;
        }
    }
    Ok(())
}

/// Runs one pending node under its lock, held from the check that found it pending to the
/// stored result (one lock per node; the kernel writes its outputs straight into the node).
/// Gathers the inputs' data, taking it where this node holds the only handle (donation), and
/// on failure puts the taken data back, so the graph stays as it was and can be evaluated
/// again (say, after freeing memory); except after a failed all-reduce, whose donated input
/// may hold partial sums ([`crate::Primitive::spoils_donated_inputs_on_failure`]): those are
/// dropped, and evaluating the node again reports its input missing.
///
/// Holding the lock across the kernel cannot deadlock: a kernel never locks a node, and a
/// nested evaluation (a custom op's forward graph) runs nodes of its own graph. Another thread
/// that reads this node meanwhile waits for its result instead of seeing it half-built.
fn run_node(
    node: &crate::array::Node,
    mut guard: MutexGuard<'_, crate::array::NodeState>,
    retain: bool,
    profile: bool,
) -> Result<()> {
    let st = &mut *guard;
    let Some(primitive) = st.primitive.as_ref() else {
        return Ok(());
    };
    // Inline storage: most nodes have at most three inputs, and with `Layout`'s inline dims
    // gathering them allocates nothing.
    let mut in_data: SmallVec<[ArrayData; 3]> = SmallVec::new();
    // Bit i: input i's data was taken (a mask rather than one more `SmallVec`). Inputs past
    // the 64th are never donated.
    let mut donated = 0u64;
    for (i, inp) in st.inputs.iter().enumerate() {
        let mut ist = inp.node.lock();
        // Held only by this consumer: take the data so the kernel may reuse its buffer.
        if !retain && i < 64 && Arc::strong_count(&inp.node) == 1 && ist.data.len() == 1 {
            if let Some(d) = ist.data.pop() {
                in_data.push(d);
            }
            inp.node.done.store(false, Ordering::Release);
            donated |= 1 << i;
        } else {
            match ist.data.get(inp.output as usize) {
                Some(d) => in_data.push(d.clone()),
                None => {
                    drop(ist);
                    give_back(&st.inputs, in_data, donated);
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
    let result = backend.eval(
        &node.stream,
        primitive,
        &in_data,
        &node.outputs,
        &mut st.data,
    );
    if let Some(t0) = t0 {
        let shape = node.outputs.first().map_or(&[][..], |m| &m.shape[..]);
        crate::profile::record_kernel(primitive, shape, t0.elapsed());
    }
    let delivered = match result {
        Ok(d) => d,
        Err(e) => {
            st.data.clear();
            if !primitive.spoils_donated_inputs_on_failure() {
                give_back(&st.inputs, in_data, donated);
            }
            return Err(e);
        }
    };
    // A backend that delivered the wrong number of outputs, or handed over an input that was
    // not donated, fails the node (its inputs given back) rather than leave it half evaluated.
    let expected = node.outputs.len();
    let sound = match delivered {
        Delivered::Pushed => st.data.len() == expected,
        Delivered::InPlace(i) => st.data.is_empty() && expected == 1 && is_donated(donated, i),
    };
    if !sound {
        let e = wrong_delivery(
            backend.name(),
            primitive,
            delivered,
            st.data.len(),
            expected,
        );
        st.data.clear();
        give_back(&st.inputs, in_data, donated);
        return Err(e);
    }
    if let Delivered::InPlace(i) = delivered {
        in_data.truncate(i + 1);
        if let Some(d) = in_data.pop() {
            st.data.push(d);
        }
    }
    // Cleared where it lies: `drop(in_data)` would first move its 368 bytes (a `memcpy`).
    in_data.clear();
    node.done.store(true, Ordering::Release);
    if !retain {
        // The graph behind the node is released once the lock is: dropping inputs may free a
        // chain of nodes.
        let primitive = st.primitive.take();
        let inputs = std::mem::take(&mut st.inputs);
        drop(guard);
        drop(inputs);
        drop(primitive);
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn wrong_delivery(
    backend: &str,
    primitive: &crate::Primitive,
    delivered: Delivered,
    pushed: usize,
    expected: usize,
) -> crate::Error {
    crate::Error::Invalid {
        op: "eval",
        msg: format!(
            "the {backend} backend delivered {delivered:?} with {pushed} outputs pushed for \
             {primitive}, which has {expected} output(s) (an in-place output must be a \
             donated input): a backend bug"
        ),
    }
}

/// Whether bit `i` of a donation mask is set.
fn is_donated(mask: u64, i: usize) -> bool {
    i < 64 && mask & (1 << i) != 0
}

/// Returns the data taken from donated inputs after a failure, so they are evaluated again.
fn give_back(inputs: &crate::array::Inputs, in_data: SmallVec<[ArrayData; 3]>, donated: u64) {
    for (i, d) in in_data.into_iter().enumerate() {
        if is_donated(donated, i) {
            inputs[i].node.lock().data = smallvec::smallvec![d];
            inputs[i].node.done.store(true, Ordering::Release);
        }
    }
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

    /// A two-rank group seen from rank 0 whose peer holds the same data (a sum doubles); with
    /// `fail` set, every all-reduce fails after summing in place, as one that loses its peer
    /// partway may.
    struct Doubling {
        fail: bool,
    }

    impl crate::collective::Communicator for Doubling {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn backend(&self) -> &str {
            "doubling"
        }
        fn all_reduce(
            &self,
            _op: crate::collective::CollectiveReduce,
            _dtype: crate::Dtype,
            data: &mut [u8],
        ) -> Result<()> {
            for c in data.chunks_exact_mut(4) {
                let v = f32::from_le_bytes(c.try_into().unwrap());
                c.copy_from_slice(&(2.0 * v).to_le_bytes());
            }
            if self.fail {
                return Err(crate::Error::Distributed {
                    op: "all_sum",
                    msg: "rank 1 was lost".into(),
                });
            }
            Ok(())
        }
        fn all_gather(&self, _: &[u8], _: &mut [u8]) -> Result<()> {
            unreachable!()
        }
        fn reduce_scatter(
            &self,
            _: crate::collective::CollectiveReduce,
            _: crate::Dtype,
            _: &[u8],
            _: &mut [u8],
        ) -> Result<()> {
            unreachable!()
        }
        fn send(&self, _: &[u8], _: usize) -> Result<()> {
            unreachable!()
        }
        fn recv(&self, _: &mut [u8], _: usize) -> Result<()> {
            unreachable!()
        }
    }

    #[test]
    fn a_donated_input_is_handed_over_as_the_output() {
        let x = Array::from_slice(&[1f32, 2.0, 3.0, 4.0], &[4]).unwrap();
        // Unary, binary (either operand) and all-reduce, each on an intermediate used once:
        // the output is the intermediate's own buffer, with the right values.
        type Step = fn(&Array) -> Array;
        let steps: [(&str, Step, [f32; 4]); 4] = [
            (
                "negative",
                |a| ops::negative(a).unwrap(),
                [-2.0, -4.0, -6.0, -8.0],
            ),
            (
                "a + 1",
                |a| ops::add(a, &Array::scalar(1f32)).unwrap(),
                [3.0, 5.0, 7.0, 9.0],
            ),
            (
                "1 - a",
                |a| ops::subtract(&Array::scalar(1f32), a).unwrap(),
                [-1.0, -3.0, -5.0, -7.0],
            ),
            (
                "all_sum",
                |a| {
                    let g = crate::collective::GroupRef(Arc::new(Doubling { fail: false }));
                    ops::all_sum(a, &g).unwrap()
                },
                [4.0, 8.0, 12.0, 16.0],
            ),
        ];
        for (name, step, want) in steps {
            let a = ops::multiply(&x, &Array::scalar(2f32)).unwrap();
            a.eval().unwrap();
            let at = data_bytes(&a);
            let y = step(&a);
            drop(a);
            y.eval().unwrap();
            assert_eq!(data_bytes(&y), at, "{name}: not computed in place");
            assert_eq!(y.to_vec::<f32>().unwrap(), want, "{name}");
        }
        // The caller's own array is never written.
        assert_eq!(x.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn a_failed_node_gives_its_donated_inputs_back() {
        // A custom op whose kernel fails once (its first call traces it, the second is that
        // failure), on an intermediate held only by it (donated): after the failure the node is
        // pending again with its input's data back, and evaluating again gives the result.
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        let f = crate::transforms::CustomFunction::new(move |xs: &[Array]| {
            if seen.fetch_add(1, Ordering::SeqCst) == 1 {
                return Err(crate::Error::OutOfMemory {
                    requested: 8,
                    active: 0,
                    limit: 0,
                });
            }
            ops::negative(&xs[0])
        })
        .build();
        let x = Array::from_slice(&[1f32, 2.0], &[2]).unwrap();
        let a = ops::add(&x, &Array::scalar(1f32)).unwrap();
        a.eval().unwrap();
        let y = f(&[a.clone()]).unwrap();
        drop(a);
        assert!(y.eval().is_err());
        assert!(!y.is_evaluated());
        let input = y.node.lock().inputs[0].clone();
        assert!(input.is_evaluated(), "the donated input was not given back");
        drop(input);
        y.eval().unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), [-2.0, -3.0]);
    }

    #[test]
    fn a_failed_collective_drops_the_partial_sums_it_was_donated() {
        // The all-reduce fails after reducing its donated input in place: that input must not
        // come back as if it were the value (a second attempt would sum partial sums).
        let failing = crate::collective::GroupRef(Arc::new(Doubling { fail: true }));
        let x = Array::from_slice(&[1f32, 2.0], &[2]).unwrap();
        let a = ops::add(&x, &Array::scalar(1f32)).unwrap();
        a.eval().unwrap();
        let y = ops::all_sum(&a, &failing).unwrap();
        drop(a);
        let err = y.eval().unwrap_err().to_string();
        assert!(err.contains("rank 1 was lost"), "{err}");
        let input = y.node.lock().inputs[0].clone();
        assert!(!input.is_evaluated());
        drop(input);
        let again = y.eval().unwrap_err().to_string();
        assert!(again.contains("not evaluated"), "{again}");
        // An input the caller still holds is copied, never written: it stays intact.
        let b = ops::add(&x, &Array::scalar(1f32)).unwrap();
        let z = ops::all_sum(&b, &failing).unwrap();
        assert!(z.eval().is_err());
        assert_eq!(b.to_vec::<f32>().unwrap(), [2.0, 3.0]);
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
