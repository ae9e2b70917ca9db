//! AMX (Intel Sapphire Rapids and later): `tdpbusd` multiplies a tile of up to 16 rows × 64
//! u8 activations by a tile of 16 k groups × 16 columns of i8 weights into 16 × 16 i32 sums,
//! 16 384 multiply-adds per instruction (a zmm `vpdpbusd` does 64). Our weight panels are
//! already in the B-tile layout (per k group, 16 columns × 4 bytes = one 64-byte tile row), so
//! B tiles load straight from the packed weights, and the same u8 activation levels and `−comp`
//! start as the VNNI kernels make the sums, and so the results, identical bit for bit.
//!
//! CTranslate2 int8 (oneDNN / MKL) uses AMX where the CPU has it; measured on a 2-core Xeon
//! with AMX, disabling it there (`ONEDNN_MAX_CPU_ISA` / `MKL_ENABLE_INSTRUCTIONS=AVX512`)
//! took its greedy batch-16 from 793 to 515 tok/s: the VNNI kernel alone cannot stay ahead.
//!
//! Rust's AMX intrinsics are unstable, hence stable `asm!` with fixed tile registers (the
//! compiler never allocates tmm registers): tmm0–tmm3 sum up to four panels, tmm4/tmm5 hold
//! A/B of 16 groups, and tmm6/tmm7 A/B of a block's remaining (< 16) groups. One tile of
//! activations serves four panels: read from L2 once per panel, it capped 600-row products at
//! 570–640 GMAC/s, now 720–860 (k 1024 × n 4096 and k 4096 × n 1024, 2 threads, the
//! quantisation and epilogue included; AVX-512 VNNI: 440–480 in the same runs).

use std::arch::asm;
use std::arch::x86_64::{__cpuid, __cpuid_count};
use std::cell::Cell;
use std::sync::OnceLock;

use super::{KBlock, Panel, Tile, GROUP, GROUP_BYTES, PANEL};

/// k groups per tile product: a 64-byte row of A holds 16 groups of 4.
const CHUNK: usize = 16;

/// Bytes per tile row, for every tile used here (a row of sums is 16 i32).
const ROW_BYTES: usize = PANEL * 4;

/// Panels summed per pass over a tile of activations: one sum tile each, beside the four
/// operand tiles.
pub(super) const PANELS: usize = 4;

/// Row tiles with fewer rows go through the AVX-512 VNNI kernel: a tile product costs about
/// as much for 1 row as for 16, while `vpdpbusd` costs per row. Measured (2 threads, µs per
/// product, AMX / VNNI): k 512 × n 2048 at m 1: 19 / 19, m 4: 18 / 24, m 16: 40 / 70; the
/// 512 × 62 834 output projection at m 1–8: 550–610 both (the weights' memory traffic bounds
/// it), m 16: 811 / 1203.
pub(super) const MIN_ROWS: usize = 4;

/// Whether this CPU and OS run the AMX-INT8 kernel (checked once): CPUID reports AMX-TILE
/// and AMX-INT8 with the tile palette this code assumes (8 tiles of 16 rows × 64 bytes), and
/// the OS granted this process the tile data state (Linux `arch_prctl`, without which the
/// first tile load would fault).
pub(in crate::model::kernels) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| cpu_has_amx_int8() && palette_fits() && request_permission())
}

/// Whether this CPU and OS also run AMX-BF16 tile products (`tdpbf16ps`), checked once.
pub(in crate::model::kernels) fn bf16_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    // Leaf 7 EDX bit 22; leaf 7 exists when `available` holds.
    *OK.get_or_init(|| available() && (__cpuid_count(7, 0).edx >> 22) & 1 == 1)
}

fn cpu_has_amx_int8() -> bool {
    // Leaf 7 is only read when the CPU reports leaves up to 0x1d.
    __cpuid(0).eax >= 0x1d && (__cpuid_count(7, 0).edx >> 24) & 0b11 == 0b11
}

/// Palette 1 as this kernel configures it: at least 8 tiles, 64 bytes per row, 16 rows.
fn palette_fits() -> bool {
    // Leaf 0x1d exists: `cpu_has_amx_int8` is checked first.
    let p = __cpuid_count(0x1d, 1);
    let (bytes_per_row, names, rows) = (p.ebx & 0xffff, p.ebx >> 16, p.ecx & 0xffff);
    bytes_per_row as usize >= ROW_BYTES && names >= 8 && rows as usize >= CHUNK
}

#[cfg(target_os = "linux")]
fn request_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: this request only widens the process's permitted XSAVE state; it reads and
    // writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// Other OSes: not used (their permission models are not implemented here).
#[cfg(not(target_os = "linux"))]
fn request_permission() -> bool {
    false
}

thread_local! {
    /// The (rows, remaining groups) this thread's tile configuration was loaded for; rows 0
    /// means none. Loading one costs more than a short block, so it is only redone on change.
    static LOADED: Cell<(u8, u8)> = const { Cell::new((0, 0)) };
}

/// Loads this thread's tile configuration for `rows` rows and `rem` groups after the last
/// whole chunk, unless already loaded. With `rows` 16 and `rem` 0 every tile is 16 rows of
/// 64 bytes (what `attention_bf16` uses).
///
/// # Safety
/// [`available`] returned true; 1 ≤ rows ≤ 16; rem < 16.
pub(in crate::model::kernels) unsafe fn configure(rows: usize, rem: usize) {
    let key = (rows as u8, rem as u8);
    if LOADED.get() == key {
        return;
    }
    let mut cfg = [0u8; 64];
    cfg[0] = 1; // palette 1
    let mut set = |tmm: usize, rows: usize, bytes: usize| {
        cfg[16 + 2 * tmm..18 + 2 * tmm].copy_from_slice(&(bytes as u16).to_le_bytes());
        cfg[48 + tmm] = rows as u8;
    };
    for c in 0..PANELS {
        set(c, rows, ROW_BYTES);
    }
    set(4, rows, CHUNK * GROUP);
    set(5, CHUNK, GROUP_BYTES);
    if rem > 0 {
        set(6, rows, rem * GROUP);
        set(7, rem, GROUP_BYTES);
    } else {
        set(6, rows, ROW_BYTES);
        set(7, CHUNK, ROW_BYTES);
    }
    asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly));
    LOADED.set(key);
}

/// `rows` rows × 16 columns of each of `panels` (1..=4) over groups g0..g1 into the matching
/// `tiles`, as the VNNI kernels compute them: a fresh tile starts at `−comp`.
///
/// # Safety
/// [`available`] returned true; 1 ≤ rows ≤ 16 ≤ the tiles' rows; `panels.len() ==
/// tiles.len()`, from 1 to [`PANELS`]; `x` holds `rows` rows of
/// `s.stride ≥ 4·g1` bytes; each panel's `w` at least `64·g1` bytes and `comp` 16 values.
pub(super) unsafe fn block(rows: usize, x: &[u8], panels: &[Panel], s: KBlock, tiles: &mut [Tile]) {
    let groups = s.g1 - s.g0;
    let (chunks, rem) = (groups / CHUNK, groups % CHUNK);
    configure(rows, rem);
    for (j, (tile, p)) in tiles.iter_mut().zip(panels).enumerate() {
        if s.fresh {
            for sums in tile.iter_mut().take(rows) {
                sums.iter_mut().zip(p.comp).for_each(|(v, c)| *v = -c);
            }
        }
        let c = tile.as_mut_ptr().cast::<u8>();
        with_sum_tile!(j, t => asm!(
            concat!("tileloadd ", t!(), ", [{}+{}*1]"),
            in(reg) c, in(reg) ROW_BYTES, options(nostack, readonly)
        ));
    }
    let xp = x.as_ptr();
    // Groups g..end: activations into tile $a, then each panel's weights into $b and their
    // product into the panel's sum tile. Tile names must be literals in the asm, hence a macro.
    macro_rules! products {
        ($a:literal, $b:literal, $g:expr, $end:expr) => {{
            let (g, end) = ($g, $end);
            asm!(
                concat!("tileloadd ", $a, ", [{a}+{sa}*1]"),
                a = in(reg) xp.add(g * GROUP),
                sa = in(reg) s.stride,
                options(nostack, readonly),
            );
            for (j, p) in panels.iter().enumerate() {
                let wp = p.w.as_ptr();
                (g..end).for_each(|g| super::prefetch_ahead(wp, s, g));
                with_sum_tile!(j, t => asm!(
                    concat!("tileloadd ", $b, ", [{b}+{sb}*1]"),
                    concat!("tdpbusd ", t!(), ", ", $a, ", ", $b),
                    b = in(reg) wp.add(g * GROUP_BYTES),
                    sb = in(reg) GROUP_BYTES,
                    options(nostack, readonly),
                ));
            }
        }};
    }
    for i in 0..chunks {
        let g = s.g0 + i * CHUNK;
        products!("tmm4", "tmm5", g, g + CHUNK);
    }
    if rem > 0 {
        products!("tmm6", "tmm7", s.g0 + chunks * CHUNK, s.g1);
    }
    for (j, tile) in tiles.iter_mut().enumerate().take(panels.len()) {
        let c = tile.as_mut_ptr().cast::<u8>();
        with_sum_tile!(j, t => asm!(
            concat!("tilestored [{}+{}*1], ", t!()),
            in(reg) c, in(reg) ROW_BYTES, options(nostack)
        ));
    }
}
