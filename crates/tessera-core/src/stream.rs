//! Devices and streams. Arrays have no device: each op is scheduled on a stream, and the runtime
//! moves data between devices. Today only the CPU backend exists; a GPU backend registers itself
//! under `DeviceType::Gpu` without changing this API.

use std::cell::Cell;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceType {
    Cpu,
    Gpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device {
    pub kind: DeviceType,
    pub index: u32,
}

impl Device {
    pub const CPU: Device = Device {
        kind: DeviceType::Cpu,
        index: 0,
    };
    pub const fn gpu(index: u32) -> Device {
        Device {
            kind: DeviceType::Gpu,
            index,
        }
    }
}

/// An ordered queue of work on one device. Ops on one stream run in graph order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stream {
    pub index: u32,
    pub device: Device,
}

impl Stream {
    /// The default CPU stream.
    pub const CPU: Stream = Stream {
        index: 0,
        device: Device::CPU,
    };

    /// The default stream of a device.
    pub fn default_for(device: Device) -> Stream {
        Stream { index: 0, device }
    }
}

thread_local! {
    static DEFAULT: Cell<Stream> = const { Cell::new(Stream::CPU) };
}

/// The stream new ops are put on, on this thread.
pub fn default_stream() -> Stream {
    DEFAULT.with(|d| d.get())
}

/// Sets the stream new ops are put on, on this thread; returns the previous one.
pub fn set_default_stream(stream: Stream) -> Stream {
    DEFAULT.with(|d| d.replace(stream))
}

/// Sets the default device (its default stream) for this thread.
pub fn set_default_device(device: Device) -> Stream {
    set_default_stream(Stream::default_for(device))
}

/// Runs `f` with ops put on `stream`, then restores the previous default.
/// ```
/// use tessera_core::{Array, Stream, with_stream};
/// let a = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
/// let b = with_stream(Stream::CPU, || tessera_core::ops::exp(&a)).unwrap();
/// assert_eq!(b.shape(), &[2]);
/// ```
pub fn with_stream<R>(stream: Stream, f: impl FnOnce() -> R) -> R {
    struct Restore(Stream);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_default_stream(self.0);
        }
    }
    let _restore = Restore(set_default_stream(stream));
    f()
}
