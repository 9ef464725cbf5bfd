//! Buffers and the allocator: 64-byte aligned blocks, a size-keyed cache of freed blocks, and
//! accounting of active, peak and cached bytes against a settable limit.
//!
//! Why a cache: evaluating a graph allocates and frees the same sizes again and again (every
//! step of a training loop, every token of a decode). Reusing a freed block skips the system
//! allocator and, more importantly, page faults on fresh memory.
//! Sizes are rounded up to a class (four classes per power of two), so a block serves requests
//! within 25% of its size.

use crate::error::{Error, Result};
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const ALIGN: usize = 64;

/// Blocks from this size on are aligned to [`HUGE_ALIGN`] and, on Linux, advised to use
/// transparent huge pages (`MADV_HUGEPAGE`; most distributions enable THP only on request).
/// Why: streaming a large array (a weight matrix while decoding, an activation in training)
/// then crosses no 4 KiB page boundary, where the hardware prefetchers stop, and needs far
/// fewer TLB entries. Measured on the development VM (AMD EPYC): one thread reading 256 MB went
/// from 19-24 to 30-31 GB/s.
const HUGE_MIN: usize = 2 << 20;
const HUGE_ALIGN: usize = 2 << 20;

/// The alignment blocks of `capacity` bytes are allocated (and freed) with.
fn align_for(capacity: usize) -> usize {
    if capacity >= HUGE_MIN {
        HUGE_ALIGN
    } else {
        ALIGN
    }
}

/// Asks the kernel to back the whole 2 MiB pages of a fresh large block with huge pages. Only
/// advice: where THP is off, or no huge page is free, the block keeps small pages.
fn advise_huge_pages(ptr: NonNull<u8>, capacity: usize) {
    #[cfg(target_os = "linux")]
    {
        unsafe extern "C" {
            fn madvise(
                addr: *mut std::ffi::c_void,
                len: usize,
                advice: std::ffi::c_int,
            ) -> std::ffi::c_int;
        }
        const MADV_HUGEPAGE: std::ffi::c_int = 14;
        let len = capacity / HUGE_ALIGN * HUGE_ALIGN;
        if len > 0 {
            // SAFETY: `ptr..ptr + len` lies inside a block we just allocated (2 MiB aligned);
            // the advice changes no contents. A failure (e.g. EINVAL without THP) is ignored.
            unsafe { madvise(ptr.as_ptr().cast(), len, MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, capacity);
}

/// A block of bytes owned by arrays (through `Arc<Buffer>`).
pub struct Buffer {
    ptr: NonNull<u8>,
    /// Bytes usable by the array (the requested size).
    len: usize,
    /// Bytes actually allocated (the size class), what is returned to the cache.
    capacity: usize,
    /// For memory the allocator does not own (a memory-mapped file): what keeps it alive.
    external: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
    /// For a piece of an [`Arena`] block: the block (freed with its last piece).
    arena: Option<std::sync::Arc<Buffer>>,
}

// SAFETY: a Buffer is plain memory; synchronisation of writes is the graph's job (a buffer is
// written only by the kernel producing it, before anyone else can see it).
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Allocates `len` bytes (uninitialised contents), reusing a cached block when one fits.
    pub fn alloc(len: usize) -> Result<Buffer> {
        allocator().alloc(len)
    }

    /// Allocates and zero-fills.
    pub fn zeroed(len: usize) -> Result<Buffer> {
        let b = Buffer::alloc(len)?;
        // SAFETY: the block has at least `len` writable bytes.
        unsafe { std::ptr::write_bytes(b.ptr.as_ptr(), 0, len) };
        Ok(b)
    }

    /// Wraps memory owned by someone else (typically a read-only memory-mapped file) without
    /// copying. `owner` keeps it alive; the allocator neither frees nor counts it, and kernels
    /// never write into it (it is not donatable).
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay valid and unmodified for as long as `owner` lives.
    pub unsafe fn from_external(
        ptr: *const u8,
        len: usize,
        owner: std::sync::Arc<dyn std::any::Any + Send + Sync>,
    ) -> Buffer {
        Buffer {
            ptr: NonNull::new(ptr as *mut u8).unwrap_or(NonNull::dangling()),
            len,
            capacity: 0,
            external: Some(owner),
            arena: None,
        }
    }

    /// True for memory wrapped with [`Buffer::from_external`].
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Mutable pointer. Writing through it is only sound while no other array reads the buffer:
    /// kernels write their fresh outputs, or a donated input nobody else holds.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.external.is_some() || self.arena.is_some() {
            return; // the owner (or the arena block) releases it
        }
        allocator().free(self.ptr, self.capacity);
    }
}

/// Freed blocks by size class (see [`class_index`]): a direct index, no hashing on the path
/// every op's output takes.
struct Cache {
    blocks: Vec<Vec<NonNull<u8>>>,
    bytes: usize,
}

/// Number of size classes: 64 up to 4 KiB, then four per power of two up to 2^63.
const CLASSES: usize = 64 + 52 * 4;

/// The slot of a size class (a value `size_class` returns) in [`Cache::blocks`].
fn class_index(capacity: usize) -> usize {
    if capacity <= 4096 {
        return capacity / ALIGN - 1;
    }
    // Above 4 KiB a class is m quarters of 2^p with m in 4..=7 (8 quarters is the next power).
    let p = (usize::BITS - 1 - capacity.leading_zeros()) as usize;
    let m = capacity >> (p - 2);
    64 + (p - 12) * 4 + (m - 4)
}

/// The capacity of the blocks in slot `class` (the inverse of [`class_index`]).
fn class_capacity(class: usize) -> usize {
    if class < 64 {
        return (class + 1) * ALIGN;
    }
    let (p, m) = (12 + (class - 64) / 4, 4 + (class - 64) % 4);
    m << (p - 2)
}

// SAFETY: the cached pointers are owned exclusively by the cache.
unsafe impl Send for Cache {}

struct Allocator {
    cache: Mutex<Cache>,
    active: AtomicUsize,
    peak: AtomicUsize,
    limit: AtomicUsize,
    cache_limit: AtomicUsize,
}

fn allocator() -> &'static Allocator {
    static A: std::sync::OnceLock<Allocator> = std::sync::OnceLock::new();
    A.get_or_init(|| {
        let total = system_memory_bytes().unwrap_or(8 << 30);
        Allocator {
            cache: Mutex::new(Cache {
                blocks: (0..CLASSES).map(|_| Vec::new()).collect(),
                bytes: 0,
            }),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            // Leave room for the OS and the rest of the process.
            limit: AtomicUsize::new(total / 10 * 9),
            cache_limit: AtomicUsize::new(total / 4),
        }
    })
}

/// Rounds a request up to its size class: multiples of 64 bytes below 4 KiB, then four classes
/// per power of two.
fn size_class(len: usize) -> usize {
    let len = len.max(1);
    if len <= 4096 {
        return len.div_ceil(ALIGN) * ALIGN;
    }
    let p = usize::BITS - 1 - len.leading_zeros(); // floor(log2)
    let quarter = 1usize << (p - 2);
    len.div_ceil(quarter) * quarter
}

impl Allocator {
    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alloc(&self, len: usize) -> Result<Buffer> {
        let capacity = size_class(len);
        // The limit is on active bytes, so it applies to a reused cached block too.
        let limit = self.limit.load(Ordering::Relaxed);
        let active = self.active.load(Ordering::Relaxed);
        if active.saturating_add(capacity) > limit {
            return Err(Error::OutOfMemory {
                requested: len,
                active,
                limit,
            });
        }
        {
            let mut cache = self.lock_cache();
            if let Some(ptr) = cache.blocks[class_index(capacity)].pop() {
                cache.bytes -= capacity;
                drop(cache);
                self.add_active(capacity);
                return Ok(Buffer {
                    ptr,
                    len,
                    capacity,
                    external: None,
                    arena: None,
                });
            }
        }
        if self.lock_cache().bytes + active + capacity > limit {
            self.clear_cache();
        }
        let layout = Layout::from_size_align(capacity, align_for(capacity)).map_err(|_| {
            Error::OutOfMemory {
                requested: len,
                active,
                limit,
            }
        })?;
        // SAFETY: layout has non-zero size (size_class >= 64).
        let raw = unsafe { std::alloc::alloc(layout) };
        let ptr = match NonNull::new(raw) {
            Some(p) => p,
            None => {
                // The system refused: drop the cache and try once more before giving up.
                self.clear_cache();
                // SAFETY: as above.
                NonNull::new(unsafe { std::alloc::alloc(layout) }).ok_or(Error::OutOfMemory {
                    requested: len,
                    active,
                    limit,
                })?
            }
        };
        if capacity >= HUGE_MIN {
            advise_huge_pages(ptr, capacity);
        }
        self.add_active(capacity);
        Ok(Buffer {
            ptr,
            len,
            capacity,
            external: None,
            arena: None,
        })
    }

    fn add_active(&self, bytes: usize) {
        let now = self.active.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn free(&self, ptr: NonNull<u8>, capacity: usize) {
        self.active.fetch_sub(capacity, Ordering::Relaxed);
        let mut cache = self.lock_cache();
        if cache.bytes + capacity <= self.cache_limit.load(Ordering::Relaxed) {
            cache.bytes += capacity;
            cache.blocks[class_index(capacity)].push(ptr);
            return;
        }
        drop(cache);
        dealloc(ptr, capacity);
    }

    fn clear_cache(&self) {
        let blocks = {
            let mut cache = self.lock_cache();
            cache.bytes = 0;
            cache
                .blocks
                .iter_mut()
                .map(std::mem::take)
                .collect::<Vec<_>>()
        };
        for (class, ptrs) in blocks.into_iter().enumerate() {
            for p in ptrs {
                dealloc(p, class_capacity(class));
            }
        }
    }
}

fn dealloc(ptr: NonNull<u8>, capacity: usize) {
    // SAFETY: every block was allocated with exactly this layout.
    unsafe {
        std::alloc::dealloc(
            ptr.as_ptr(),
            Layout::from_size_align_unchecked(capacity, align_for(capacity)),
        )
    };
}

fn system_memory_bytes() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Long-lived buffers (a model's weights) packed back to back, 64-byte aligned, in large blocks
/// of the allocator (huge pages, see [`Buffer`]), in the order they are asked for; a block is
/// freed with the last buffer cut from it.
///
/// Why: a decode step reads every weight once, in load order. Allocated one by one, a matrix
/// under 2 MiB got 4 KiB pages (at each page boundary the hardware prefetchers stop, and each
/// page takes a TLB entry) and larger ones a small-page tail; packed in an arena the weights of
/// a layer form one long stream in huge pages. Measured on a Xeon (2 threads, a 0.5B-shape
/// decode step's Q4_0x8 products alone, `quant::tests` probe): 9.4-9.9 ms -> 8.5-8.8 ms per
/// token; the 896 x 896 product 19-20 -> 15-16 µs, the 896 x 4864 one 99-102 -> 78-81 µs.
pub struct Arena {
    /// The block being filled and the bytes of it already handed out.
    current: Mutex<Option<(std::sync::Arc<Buffer>, usize)>>,
    block_bytes: usize,
}

impl Default for Arena {
    fn default() -> Arena {
        Arena::new()
    }
}

impl Arena {
    /// Blocks of 32 MiB: large enough for a layer of a small model, small enough that the
    /// unused end of the last block costs little.
    pub const BLOCK_BYTES: usize = 32 << 20;

    pub fn new() -> Arena {
        Arena::with_block_bytes(Arena::BLOCK_BYTES)
    }

    /// An arena of `block_bytes` blocks (rounded up to whole 2 MiB pages).
    pub fn with_block_bytes(block_bytes: usize) -> Arena {
        Arena {
            current: Mutex::new(None),
            block_bytes: block_bytes.max(HUGE_ALIGN).next_multiple_of(HUGE_ALIGN),
        }
    }

    /// `len` uninitialised bytes, 64-byte aligned, after the previous buffer. A request over
    /// half a block gets a block of its own from the allocator (a large block is already in
    /// huge pages); the arena's current block is kept for the next small one.
    pub fn alloc(&self, len: usize) -> Result<Buffer> {
        let span = len.max(1).div_ceil(ALIGN) * ALIGN;
        if span > self.block_bytes / 2 {
            return Buffer::alloc(len);
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let fits = matches!(&*current, Some((b, used)) if used + span <= b.len());
        if !fits {
            *current = Some((std::sync::Arc::new(Buffer::alloc(self.block_bytes)?), 0));
        }
        let Some((block, used)) = current.as_mut() else {
            unreachable!("a block was just installed")
        };
        // SAFETY: `used + span <= block.len()`, so the piece lies inside the block; pieces never
        // overlap (`used` only grows).
        let ptr = unsafe { NonNull::new_unchecked(block.as_mut_ptr().add(*used)) };
        *used += span;
        Ok(Buffer {
            ptr,
            len,
            capacity: 0,
            external: None,
            arena: Some(block.clone()),
        })
    }
}

/// `a` copied into `arena` when it wraps external memory (a weight in a memory-mapped model
/// file): the copy gets huge pages and its place in the arena's load-order stream, where a
/// file mapping has 4 KiB pages (see [`Arena`]). Anything else (already owned, or a lazy
/// result) is returned as is, and so is a copy that would not pass [`fits_in_budget`]: a model
/// larger than memory keeps streaming from its file. Evaluates `a`.
pub fn own_in(a: &crate::Array, arena: &Arena) -> Result<crate::Array> {
    let data = a.data()?;
    let bytes = data.size() * data.dtype.size();
    if !data.buffer.is_external() || !fits_in_budget(bytes) {
        return Ok(a.clone());
    }
    let src = if data.is_contiguous() {
        data
    } else {
        crate::backend::cpu::copy::contiguous(&data)?
    };
    let out = crate::layout::ArrayData::alloc_in(src.dtype, src.shape(), arena)?;
    // SAFETY: `src` is row-major and covers `bytes` bytes from its pointer; the fresh piece
    // holds as many and nothing else references it yet.
    unsafe { std::ptr::copy_nonoverlapping(src.ptr::<u8>(), out.mut_ptr::<u8>(), bytes) };
    Ok(crate::Array::from_data(out))
}

/// A zero-filled array of `shape` and `dtype` cut from `arena`: long-lived buffers too small
/// for huge pages on their own (under 2 MiB) that are read in full again and again, such as
/// the layers of a KV cache, share the arena's huge pages this way. The piece is the array's
/// alone, so kernels may still write it in place (see [`crate::layout::ArrayData::is_donatable`]).
pub fn zeros_in(shape: &[usize], dtype: crate::Dtype, arena: &Arena) -> Result<crate::Array> {
    let out = crate::layout::ArrayData::alloc_in(dtype, shape, arena)?;
    // SAFETY: the fresh piece holds `size * dtype.size()` writable bytes and nothing else
    // references it yet.
    unsafe { std::ptr::write_bytes(out.mut_ptr::<u8>(), 0, out.size() * dtype.size()) };
    Ok(crate::Array::from_data(out))
}

/// Whether `bytes` more of optional copies (weights moved out of a file map, re-laid-out
/// matrices) still leave a quarter of the memory limit free for the computation.
pub fn fits_in_budget(bytes: usize) -> bool {
    let limit = memory_limit();
    active_memory().saturating_add(bytes) <= limit - limit / 4
}

/// Bytes held by live arrays.
pub fn active_memory() -> usize {
    allocator().active.load(Ordering::Relaxed)
}

/// The most bytes held by live arrays since start (or the last [`reset_peak_memory`]).
pub fn peak_memory() -> usize {
    allocator().peak.load(Ordering::Relaxed)
}

pub fn reset_peak_memory() {
    let a = allocator();
    a.peak
        .store(a.active.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Bytes of freed blocks kept for reuse.
pub fn cache_memory() -> usize {
    allocator().lock_cache().bytes
}

/// Returns cached blocks to the system.
pub fn clear_cache() {
    allocator().clear_cache()
}

/// Sets the limit on active bytes; returns the previous one. Allocations past it fail at `eval`
/// with [`Error::OutOfMemory`].
pub fn set_memory_limit(bytes: usize) -> usize {
    allocator().limit.swap(bytes, Ordering::Relaxed)
}

pub fn memory_limit() -> usize {
    allocator().limit.load(Ordering::Relaxed)
}

/// Sets the most bytes the cache keeps; returns the previous value. 0 disables caching.
pub fn set_cache_limit(bytes: usize) -> usize {
    let a = allocator();
    let old = a.cache_limit.swap(bytes, Ordering::Relaxed);
    if a.lock_cache().bytes > bytes {
        a.clear_cache();
    }
    old
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_class_has_its_own_slot_and_maps_back() {
        let mut seen = std::collections::HashSet::new();
        let mut lens: Vec<usize> = (1..20_000).collect();
        lens.extend((14..63).flat_map(|p| [(1usize << p) - 1, 1 << p, (1 << p) + 1, 3 << (p - 1)]));
        lens.push(usize::MAX / 2);
        for len in lens {
            let c = size_class(len);
            let i = class_index(c);
            assert!(i < CLASSES, "{len} bytes: class {c} has slot {i}");
            assert_eq!(class_capacity(i), c, "{len} bytes: slot {i} maps back");
            seen.insert(c);
        }
        // Distinct classes never share a slot.
        let slots: std::collections::HashSet<_> = seen.iter().map(|&c| class_index(c)).collect();
        assert_eq!(slots.len(), seen.len());
    }

    #[test]
    fn arena_packs_pieces_and_frees_a_block_with_its_last_piece() {
        let arena = Arena::with_block_bytes(4 << 20);
        let a = arena.alloc(100).unwrap();
        let b = arena.alloc(5000).unwrap();
        let c = arena.alloc(0).unwrap();
        let addr = |x: &Buffer| x.as_ptr() as usize;
        assert_eq!(addr(&a) % HUGE_ALIGN, 0, "a block starts on a huge page");
        assert_eq!(
            addr(&b) - addr(&a),
            128,
            "pieces follow each other, 64-byte aligned"
        );
        assert_eq!(addr(&c) - addr(&b), 5056);
        assert_eq!((a.len(), b.len(), c.len()), (100, 5000, 0));
        // Over half a block: a block of its own; the arena's block stays current.
        let big = arena.alloc((2 << 20) + 1).unwrap();
        assert!(big.arena.is_none());
        let d = arena.alloc(2 << 20).unwrap();
        assert_eq!(addr(&d) - addr(&c), 64);
        // No room left in the first block: the next piece opens a second one.
        let e = arena.alloc(2 << 20).unwrap();
        assert_eq!(addr(&e) % HUGE_ALIGN, 0);
        assert!(addr(&e) < addr(&a) || addr(&e) >= addr(&a) + (4 << 20));
        // The pieces do not overlap: each keeps what was written into it.
        for (i, x) in [&a, &b, &d, &e].iter().enumerate() {
            // SAFETY: each piece has `len` writable bytes.
            unsafe { std::ptr::write_bytes(x.as_mut_ptr(), i as u8 + 1, x.len()) };
        }
        for (i, x) in [&a, &b, &d, &e].iter().enumerate() {
            // SAFETY: as above.
            let bytes = unsafe { std::slice::from_raw_parts(x.as_ptr(), x.len()) };
            assert!(bytes.iter().all(|&v| v == i as u8 + 1), "piece {i}");
        }
        let first = std::sync::Arc::downgrade(a.arena.as_ref().unwrap());
        drop((a, b, c));
        assert!(first.upgrade().is_some(), "a piece still uses the block");
        drop(d);
        assert!(first.upgrade().is_none(), "the last piece freed the block");
        drop((arena, e, big));
    }

    #[test]
    fn arena_arrays_start_zeroed_and_are_updated_in_place() {
        let arena = Arena::with_block_bytes(4 << 20);
        // Leave bytes behind in the arena's block, then cut a fresh array after them.
        let dirty = arena.alloc(256).unwrap();
        // SAFETY: the piece has 256 writable bytes.
        unsafe { std::ptr::write_bytes(dirty.as_mut_ptr(), 0xAB, 256) };
        let a = zeros_in(&[4, 8], crate::Dtype::F32, &arena).unwrap();
        assert_eq!(a.to_vec::<f32>().unwrap(), vec![0f32; 32]);
        let addr = a.data().unwrap().buffer.as_ptr() as usize;
        assert_eq!(
            addr,
            dirty.as_ptr() as usize + 256,
            "cut from the arena's block"
        );
        // Held only by the update, the piece is written in place (a KV cache's decode step).
        let row = crate::Array::from_slice(&[1f32; 8], &[1, 8]).unwrap();
        let b = crate::ops::slice_update(&a, &row, &[2, 0], &[3, 8], &[1, 1]).unwrap();
        drop(a);
        b.eval().unwrap();
        assert_eq!(
            b.data().unwrap().buffer.as_ptr() as usize,
            addr,
            "donated, not copied"
        );
        let got = b.to_vec::<f32>().unwrap();
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, &x)| x == if i / 8 == 2 { 1.0 } else { 0.0 })
        );
    }

    #[test]
    fn large_blocks_are_aligned_for_huge_pages() {
        let big = Buffer::alloc(HUGE_MIN + 12345).unwrap();
        assert_eq!(big.as_ptr() as usize % HUGE_ALIGN, 0);
        // SAFETY: the block has that many writable bytes.
        unsafe { std::ptr::write_bytes(big.as_mut_ptr(), 7, big.len()) };
        let small = Buffer::alloc(4096).unwrap();
        assert_eq!(small.as_ptr() as usize % ALIGN, 0);
    }

    #[test]
    fn size_classes_cover_requests() {
        for len in [
            0usize,
            1,
            63,
            64,
            65,
            4096,
            4097,
            5000,
            1 << 20,
            (1 << 20) + 1,
            123_456_789,
        ] {
            let c = size_class(len);
            assert!(c >= len && c.is_multiple_of(ALIGN), "{len} -> {c}");
            assert!(len < 4096 || c <= len + len / 4, "{len} -> {c}");
        }
    }

    #[test]
    fn buffers_are_aligned_and_reused() {
        let b = Buffer::alloc(1000).unwrap();
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        let p = b.as_ptr();
        drop(b);
        let b2 = Buffer::alloc(1000).unwrap();
        // Another test thread may have taken the block; only check when it is ours again.
        let _ = p == b2.as_ptr();
        assert!(b2.len() == 1000);
    }
}
