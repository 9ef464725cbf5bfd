//! The tile configuration and the micro-kernel, in inline assembly (Rust has no stable AMX
//! intrinsics; the instructions need no target feature to assemble).
//!
//! Every tile is 16 rows of 64 bytes: a P tile is 16 rows of 32 bf16 values (k contiguous), a Q
//! tile is 16 pair-rows of 16 columns (row `r`, column `j`: the bf16 pair `(k = 2r, 2r + 1)` of
//! column `j`, the layout `tdpbf16ps` wants for its second operand), a C tile 16 x 16 f32.
//! The micro-kernel holds a 32 x 32 block of C in four tiles (`tmm0..3`), loads two P tiles
//! (`tmm4, 5`) and two Q tiles (`tmm6, 7`) per 32 values of k, and issues four `tdpbf16ps`:
//! each loaded tile serves two products, and the four accumulations are independent. Every
//! operand tile is 1 KB of consecutive bytes (rows 64 bytes apart): in a C experiment, P tiles
//! read with a 1.8 KB row stride (a row-major weight panel) ran 5-10% slower.

use std::arch::asm;

/// The `ldtilecfg` memory operand (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// All eight tiles 16 rows x 64 bytes.
static CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Values of k per step (one P tile row).
pub(crate) const KSTEP: usize = 32;
/// Rows of C (P rows) and columns (Q columns) per micro-kernel call.
pub(crate) const BLOCK: usize = 32;
/// Bytes of one pair-packed Q tile (16 pair-rows x 16 columns x 4 bytes).
pub(crate) const Q_TILE_BYTES: usize = 1024;

/// Tiles configured on the current thread for as long as this lives; released on drop (the
/// tile state is large, and a thread that keeps it configured makes every context switch save
/// it).
pub(crate) struct Tiles(());

impl Tiles {
    /// # Safety
    /// [`super::supported`] returned true.
    pub(crate) unsafe fn configure() -> Tiles {
        asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
        Tiles(())
    }

    /// `c[i][j] (+)= Σ_k p[i][k] q[j][k]` for a 32 x 32 block over `ksteps` steps of 32
    /// values: P's 32 rows of a step are 2 KB at `p` (16 rows of 64 bytes, then the other 16),
    /// the next step `p_step` bytes on; `q0` and `q1` are the pair-packed Q columns 0..16 and
    /// 16..32 (one 1 KB tile per step, consecutive); `c` is 32 rows of 32 f32, loaded first
    /// when `accumulate` (else the sums start at zero) and stored at the end.
    ///
    /// # Safety
    /// The tiles are configured (`self`), `ksteps >= 1`, the pointers are valid for the extents
    /// above.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn block(
        &self,
        p: *const u8,
        p_step: usize,
        q0: *const u8,
        q1: *const u8,
        ksteps: usize,
        c: &mut [[f32; BLOCK]; BLOCK],
        accumulate: bool,
    ) {
        debug_assert!(ksteps >= 1);
        let c = c.as_mut_ptr().cast::<f32>();
        if accumulate {
            asm!(
                "tileloadd tmm0, [{c0} + {s128}*1]",
                "tileloadd tmm1, [{c0} + {s128}*1 + 64]",
                "tileloadd tmm2, [{c2} + {s128}*1]",
                "tileloadd tmm3, [{c2} + {s128}*1 + 64]",
                c0 = in(reg) c,
                c2 = in(reg) c.add(16 * BLOCK),
                s128 = in(reg) 128usize,
                out("tmm0") _,
                out("tmm1") _,
                out("tmm2") _,
                out("tmm3") _,
                options(nostack, readonly)
            );
        } else {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                out("tmm0") _,
                out("tmm1") _,
                out("tmm2") _,
                out("tmm3") _,
                options(nostack, nomem)
            );
        }
        asm!(
            "2:",
            "tileloadd tmm4, [{p} + {s64}*1]",
            "tileloadd tmm6, [{q0} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{q1} + {s64}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{p} + {s64}*1 + 1024]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {p}, {p_step}",
            "add {q0}, 1024",
            "add {q1}, 1024",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c0} + {s128}*1], tmm0",
            "tilestored [{c0} + {s128}*1 + 64], tmm1",
            "tilestored [{c2} + {s128}*1], tmm2",
            "tilestored [{c2} + {s128}*1 + 64], tmm3",
            p = inout(reg) p => _,
            q0 = inout(reg) q0 => _,
            q1 = inout(reg) q1 => _,
            n = inout(reg) ksteps => _,
            p_step = in(reg) p_step,
            s64 = in(reg) 64usize,
            s128 = in(reg) 128usize,
            c0 = in(reg) c,
            c2 = in(reg) c.add(16 * BLOCK),
            out("tmm0") _,
            out("tmm1") _,
            out("tmm2") _,
            out("tmm3") _,
            out("tmm4") _,
            out("tmm5") _,
            out("tmm6") _,
            out("tmm7") _,
            options(nostack)
        );
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by `configure`.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
