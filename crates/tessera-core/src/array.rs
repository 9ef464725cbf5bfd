//! The lazy array handle and its graph node.
//!
//! An [`Array`] is a cheap handle (`Arc` + output index) to one output of a `Node`. A node holds
//! its primitive and inputs until it is evaluated; then it holds only its data, and the graph
//! behind it is released. Shapes and dtypes are known when the node is built.

use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result, invalid};
use crate::layout::{ArrayData, Dims, Layout, clone_dims};
use crate::memory::Buffer;
use crate::primitive::Primitive;
use crate::stream::{Stream, default_stream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Shape and dtype of one node output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub shape: Dims<usize>,
    pub dtype: Dtype,
}

pub(crate) struct NodeState {
    /// `None` for leaves and, after evaluation, for every node.
    pub primitive: Option<Primitive>,
    pub inputs: Inputs,
    /// One entry per output once evaluated; empty before.
    pub data: Outputs,
}

impl NodeState {
    /// An op still to run: it has a primitive and no data yet.
    pub fn is_pending_op(&self) -> bool {
        self.primitive.is_some() && self.data.is_empty()
    }
}

/// A node's inputs: inline for up to three (nearly every op), so building a node allocates
/// only the node itself.
pub(crate) type Inputs = smallvec::SmallVec<[Array; 3]>;
/// A node's evaluated outputs (inline: nodes have one).
pub(crate) type Outputs = smallvec::SmallVec<[ArrayData; 1]>;

pub(crate) struct Node {
    pub outputs: smallvec::SmallVec<[Meta; 1]>,
    pub stream: Stream,
    pub state: Mutex<NodeState>,
    /// Marks the node as visited by one graph traversal (the traversal's id).
    pub visit: AtomicU64,
    /// True exactly while `state.data` holds the outputs: read without the lock by
    /// `is_evaluated` and the graph walk. Written under the lock, next to `data`.
    pub done: AtomicBool,
}

impl Node {
    pub fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Node {
    /// Releases the graph behind this node iteratively: a long chain would otherwise recurse once
    /// per node and overflow the stack.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if st.inputs.is_empty() {
            return;
        }
        let mut stack: Vec<Array> = std::mem::take(&mut st.inputs).into_vec();
        while let Some(a) = stack.pop() {
            if Arc::strong_count(&a.node) == 1 {
                // We hold the last handle: move its inputs out so its own drop does not recurse.
                let mut s = a.node.lock();
                stack.extend(s.inputs.drain(..));
            }
        }
    }
}

/// A lazy n-dimensional array. Cloning is cheap (a reference count).
#[derive(Clone)]
pub struct Array {
    pub(crate) node: Arc<Node>,
    pub(crate) output: u32,
}

impl Array {
    /// An evaluated array from existing data.
    pub(crate) fn from_data(data: ArrayData) -> Array {
        let meta = Meta {
            shape: clone_dims(&data.layout.shape),
            dtype: data.dtype,
        };
        let node = Node {
            outputs: smallvec::smallvec![meta],
            stream: default_stream(),
            state: Mutex::new(NodeState {
                primitive: None,
                inputs: Inputs::new(),
                data: smallvec::smallvec![data],
            }),
            visit: AtomicU64::new(0),
            done: AtomicBool::new(true),
        };
        Array {
            node: Arc::new(node),
            output: 0,
        }
    }

    /// An evaluated row-major array viewing an existing buffer, e.g. a tensor inside a
    /// memory-mapped model file (see [`Buffer::from_external`](crate::memory::Buffer::from_external)).
    /// No copy is made. The buffer must hold exactly `shape.product() * dtype.size()` bytes and be
    /// aligned to the dtype's size.
    pub fn from_buffer(
        buffer: Arc<crate::memory::Buffer>,
        dtype: Dtype,
        shape: &[usize],
    ) -> Result<Array> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.size()));
        if n != Some(buffer.len()) {
            return crate::error::invalid(
                "from_buffer",
                format!(
                    "a buffer of {} bytes cannot hold a {} array of shape {}",
                    buffer.len(),
                    dtype,
                    crate::error::fmt_shape(shape)
                ),
            );
        }
        if !(buffer.as_ptr() as usize).is_multiple_of(dtype.size()) {
            return crate::error::invalid(
                "from_buffer",
                format!(
                    "buffer is not aligned to {} bytes for {}",
                    dtype.size(),
                    dtype
                ),
            );
        }
        Ok(Array::from_data(ArrayData {
            buffer,
            dtype,
            layout: crate::layout::Layout::contiguous(shape),
        }))
    }

    /// A new graph node with one output of the given shape and dtype. Crate-private: kernels
    /// trust that the shape and dtype are the ones the op computed, so only `ops` (and the
    /// transforms) may build nodes.
    pub(crate) fn lazy(
        primitive: Primitive,
        inputs: impl IntoIterator<Item = Array>,
        shape: impl crate::layout::IntoDims,
        dtype: Dtype,
    ) -> Array {
        let meta = Meta {
            shape: shape.into_dims(),
            dtype,
        };
        let inputs: Inputs = inputs.into_iter().collect();
        // Built field by field in its allocation: `Arc::new(Node { .. })` assembled the
        // 350-byte node on the stack and copied it over (a `memcpy` for every op built; 2-3%
        // of the instructions of building and evaluating a one-op graph). (A shared helper for
        // this and `from_data`, inlined or not, measured slower: the parts were moved twice.)
        let mut node = Arc::<Node>::new_uninit();
        match Arc::get_mut(&mut node) {
            Some(slot) => {
                let p = slot.as_mut_ptr();
                // SAFETY: `p` points to the new, unshared allocation; every field is written
                // exactly once before `assume_init`.
                unsafe {
                    std::ptr::addr_of_mut!((*p).outputs).write(smallvec::smallvec![meta]);
                    std::ptr::addr_of_mut!((*p).stream).write(default_stream());
                    std::ptr::addr_of_mut!((*p).state).write(Mutex::new(NodeState {
                        primitive: Some(primitive),
                        inputs,
                        data: Outputs::new(),
                    }));
                    std::ptr::addr_of_mut!((*p).visit).write(AtomicU64::new(0));
                    std::ptr::addr_of_mut!((*p).done).write(AtomicBool::new(false));
                }
            }
            None => unreachable!("a fresh Arc is unshared"),
        }
        // SAFETY: all fields were written above.
        let node = unsafe { node.assume_init() };
        Array { node, output: 0 }
    }

    /// Builds an array from a slice and a shape (row-major).
    /// ```
    /// let a = tessera_core::Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    /// assert_eq!(a.shape(), &[2, 3]);
    /// ```
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Array> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return invalid(
                "array",
                format!(
                    "{} elements do not fill shape {}",
                    data.len(),
                    crate::error::fmt_shape(shape)
                ),
            );
        }
        let buf = Buffer::alloc(std::mem::size_of_val(data))?;
        // SAFETY: the buffer has room for `data.len()` elements of T and is 64-byte aligned.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), buf.as_mut_ptr() as *mut T, data.len())
        };
        Ok(Array::from_data(ArrayData {
            buffer: Arc::new(buf),
            dtype: T::DTYPE,
            layout: Layout::contiguous(shape),
        }))
    }

    /// Builds an array from a vector and a shape (row-major).
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Array> {
        Array::from_slice(&data, shape)
    }

    /// A 0-d array holding `v`.
    pub fn scalar<T: Element>(v: T) -> Array {
        // A one-element allocation can only fail past the memory limit; fall back to a fresh
        // exact allocation path by retrying through from_slice's error-free twin.
        match Array::from_slice(&[v], &[]) {
            Ok(a) => a,
            Err(_) => {
                let data = ArrayData {
                    buffer: Arc::new(scalar_buffer(v)),
                    dtype: T::DTYPE,
                    layout: Layout::contiguous(&[]),
                };
                Array::from_data(data)
            }
        }
    }

    /// A 0-d array of `dtype` holding `v` (converted).
    pub fn scalar_of(v: f64, dtype: Dtype) -> Array {
        crate::dispatch_dtype!(dtype, T => Array::scalar(<T as Element>::from_f64(v)))
    }

    pub(crate) fn meta(&self) -> &Meta {
        &self.node.outputs[self.output as usize]
    }

    pub fn shape(&self) -> &[usize] {
        &self.meta().shape
    }

    pub fn dtype(&self) -> Dtype {
        self.meta().dtype
    }

    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    pub fn size(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn nbytes(&self) -> usize {
        self.size() * self.dtype().size()
    }

    /// The stream this array's op runs on.
    pub fn stream(&self) -> Stream {
        self.node.stream
    }

    /// Size of `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        let ax = crate::ops::normalize_axis("dim", axis, self.ndim())?;
        Ok(self.shape()[ax])
    }

    /// True once the array has data (evaluated or built from data).
    pub fn is_evaluated(&self) -> bool {
        self.node.done.load(Ordering::Acquire)
    }

    /// Evaluates this array (and what it depends on).
    pub fn eval(&self) -> Result<()> {
        crate::transforms::eval(std::slice::from_ref(self))
    }

    /// The evaluated data. Evaluates first if needed.
    pub fn data(&self) -> Result<ArrayData> {
        self.eval()?;
        let st = self.node.lock();
        st.data
            .get(self.output as usize)
            .cloned()
            .ok_or_else(|| Error::Invalid {
                op: "eval",
                msg: "array has no data after evaluation".into(),
            })
    }

    /// The elements in row-major order, converted to `T` if the dtype differs.
    /// ```
    /// let a = tessera_core::Array::from_slice(&[1.5f32, 2.5], &[2]).unwrap();
    /// assert_eq!(a.to_vec::<f32>().unwrap(), vec![1.5, 2.5]);
    /// ```
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let a = if self.dtype() == T::DTYPE {
            self.clone()
        } else {
            self.astype(T::DTYPE)?
        };
        let d = a.data()?;
        // Contiguous data (the usual case, e.g. a decode step's logits): one copy.
        if let Some(s) = d.as_slice::<T>() {
            return Ok(s.to_vec());
        }
        let mut out = Vec::with_capacity(d.size());
        crate::backend::cpu::copy::for_each_element::<T>(&d, |v| out.push(v));
        Ok(out)
    }

    /// The single element of a one-element array.
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.size() != 1 {
            return invalid(
                "item",
                format!(
                    "array of shape {} has {} elements, not 1",
                    crate::error::fmt_shape(self.shape()),
                    self.size()
                ),
            );
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// Converts to `dtype` (lazily). Float to integer truncates toward zero and saturates; NaN
    /// becomes 0.
    pub fn astype(&self, dtype: Dtype) -> Result<Array> {
        crate::ops::astype(self, dtype)
    }

    /// True when both handles refer to the same node output.
    pub fn same(&self, other: &Array) -> bool {
        Arc::ptr_eq(&self.node, &other.node) && self.output == other.output
    }

    /// The primitive of the node, if it is not evaluated (for inspection and transforms).
    pub fn primitive(&self) -> Option<Primitive> {
        self.node.lock().primitive.clone()
    }

    /// The inputs of the node (empty once evaluated).
    pub fn inputs(&self) -> Vec<Array> {
        self.node.lock().inputs.to_vec()
    }
}

fn scalar_buffer<T: Element>(v: T) -> Buffer {
    // Only reached when even one element exceeds the memory limit; bypass the limit because a
    // scalar is always needed to report or recover.
    let old = crate::memory::set_memory_limit(usize::MAX);
    let buf = Buffer::alloc(std::mem::size_of::<T>());
    crate::memory::set_memory_limit(old);
    match buf {
        Ok(b) => {
            // SAFETY: room for one T.
            unsafe { std::ptr::write(b.as_mut_ptr() as *mut T, v) };
            b
        }
        Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::new::<T>()),
    }
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
