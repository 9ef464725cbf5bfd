//! Backends compute primitives on a device. The CPU backend is built in; a GPU backend registers
//! itself with [`register_backend`] at start-up (dependencies point from backends to the core,
//! never the reverse).

pub mod cpu;

use crate::array::Meta;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::layout::ArrayData;
use crate::primitive::Primitive;
use crate::stream::{Device, DeviceType, Stream};
use std::sync::{OnceLock, RwLock};

/// Computes primitives on one kind of device.
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether `eval` has a kernel for this primitive with these input dtypes.
    fn supports(&self, primitive: &Primitive, dtypes: &[Dtype]) -> bool;
    /// Computes the outputs of one node (shapes and dtypes `outputs`) and pushes their data, one
    /// per output in order, onto `results` (given empty; it lies in the node, so a result is
    /// never copied on its way out). An input whose buffer has no other owner
    /// ([`ArrayData::is_donatable`]) may instead be written in place and handed over as the
    /// node's one output ([`Delivered::InPlace`]).
    fn eval(
        &self,
        stream: &Stream,
        primitive: &Primitive,
        inputs: &[ArrayData],
        outputs: &[Meta],
        results: &mut crate::array::Outputs,
    ) -> Result<Delivered>;
    /// Waits for queued work on `stream`.
    fn synchronize(&self, stream: &Stream) -> Result<()>;
    /// A hint from the graph walk: a coming node will read the `len` bytes at `addr` (its
    /// weights; see [`Primitive::streamed_input`]). A backend may start fetching them while it
    /// is otherwise idle. Only the address is passed: it must never be dereferenced, as the
    /// bytes may be freed before the node runs.
    fn prefetch(&self, addr: usize, len: usize) {
        let _ = (addr, len);
    }
}

/// How a kernel delivered a node's outputs ([`Backend::eval`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// One datum per output was pushed onto `results`.
    Pushed,
    /// The node's one output was written in place into input `i`, which was donatable (same
    /// shape and dtype as the output): that input's data becomes the output as it is, where
    /// returning a clone of it would cost a reference-count round trip and a layout copy.
    InPlace(usize),
}

static GPU: OnceLock<RwLock<Option<&'static dyn Backend>>> = OnceLock::new();

/// Installs the backend used for `DeviceType::Gpu` streams.
pub fn register_backend(kind: DeviceType, backend: &'static dyn Backend) {
    if kind == DeviceType::Gpu {
        let slot = GPU.get_or_init(|| RwLock::new(None));
        *slot.write().unwrap_or_else(|e| e.into_inner()) = Some(backend);
    }
}

/// The backend for a device; GPU streams fall back to the CPU when no GPU backend is registered.
pub fn for_device(device: Device) -> &'static dyn Backend {
    match device.kind {
        DeviceType::Cpu => &cpu::CPU,
        DeviceType::Gpu => GPU
            .get()
            .and_then(|s| *s.read().unwrap_or_else(|e| e.into_inner()))
            .unwrap_or(&cpu::CPU),
    }
}
