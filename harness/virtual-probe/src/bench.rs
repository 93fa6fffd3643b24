//! Benchmark: flash a 64 KiB image through probe-rs on a virtual board, with ST's flash algorithm
//! running on the emulated core. Reports wall time and what the emulator did.

use std::io::Cursor;
use std::time::{Duration, Instant};

use hil_virtual_board::{Board, BoardConfig, BoardError, Timing};
use probe_rs::Permissions;
use probe_rs::flashing::{BinLoader, BinOptions, DownloadOptions, FileDownloadError, FlashError};
use probe_rs::probe::list::Lister;

/// What to flash where.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Chip of the virtual board (chip data name, e.g. `STM32G071RB`).
    pub chip: String,
    /// Image size in bytes (64 KiB for `flash_64k`).
    pub size: usize,
    /// Where the image goes.
    pub address: u32,
    pub verify: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { chip: "STM32G071RB".into(), size: 64 * 1024, address: 0x0800_0000, verify: true }
    }
}

/// The result (printed as JSON by `cargo bench` and `hil bench flash-probe`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct FlashBench {
    pub chip: String,
    pub probe_rs_target: String,
    pub bytes: usize,
    pub address: u32,
    pub verify: bool,
    /// Session attach through the selector (probe-rs DP setup, ST debug sequence).
    pub attach_ms: f64,
    /// FlashLoader::commit: algorithm download, erase, program, verify read-back.
    pub wall_ms: f64,
    pub emulated_instructions: u64,
    pub emulated_cycles: u64,
    /// Virtual time that passed on the board during the flashing.
    pub virtual_time_ms: f64,
    /// Emulated instructions per wall second while flashing (millions).
    pub mips: f64,
    pub kib_per_s: f64,
    pub flash_programs: u64,
    pub flash_page_erases: u64,
    /// FLASH register accesses by the core (the algorithm) and by the debugger.
    pub flash_reg_accesses_cpu: u64,
    pub flash_reg_accesses_debug: u64,
    /// Messages the probe sent to the board thread, and the memory accesses they carried.
    pub probe_transfers: u64,
    pub probe_memory_accesses: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("virtual board: {0}")]
    Board(#[from] BoardError),
    #[error("chip {0:?} has no chip data")]
    UnknownChip(String),
    #[error("open the virtual probe {selector}: {source}")]
    Open { selector: String, source: probe_rs::probe::DebugProbeError },
    #[error("attach to {target}: {source}")]
    Attach { target: String, source: probe_rs::Error },
    #[error("load the {bytes}-byte image at {address:#010x}: {source}")]
    Load { bytes: usize, address: u32, source: FileDownloadError },
    #[error("flash {bytes} bytes at {address:#010x}: {source}")]
    Flash { bytes: usize, address: u32, source: FlashError },
    #[error("flash content differs from the image at {address:#010x}: {found:#04x} instead of {expected:#04x}")]
    Mismatch { address: u32, expected: u8, found: u8 },
}

/// A reproducible image (xorshift bytes) so that no page is left as erased.
pub fn test_image(size: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Flash 64 KiB at the start of flash of a fresh virtual board (`timing: fast`).
pub fn flash_64k(chip: &str) -> Result<FlashBench, BenchError> {
    flash_image(&BenchOptions { chip: chip.to_string(), ..BenchOptions::default() })
}

/// Flash `opts.size` bytes through probe-rs on a fresh virtual board and measure.
pub fn flash_image(opts: &BenchOptions) -> Result<FlashBench, BenchError> {
    let chip = hil_chips::Chip::by_name(&opts.chip).ok_or_else(|| BenchError::UnknownChip(opts.chip.clone()))?;
    crate::register();
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("bench-flash-{}-{}-{n}", chip.name.to_ascii_lowercase(), std::process::id());
    let cfg = BoardConfig {
        name: name.clone(),
        chip: chip.name.clone(),
        timing: Timing::Fast,
        power_on: true,
        default_deadline: Duration::from_secs(30),
        ..BoardConfig::default()
    };
    let board = Board::start(cfg)?;
    let r = run(&board, chip, opts);
    let _ = board.shutdown();
    r
}

fn run(board: &Board, chip: &hil_chips::Chip, opts: &BenchOptions) -> Result<FlashBench, BenchError> {
    let image = test_image(opts.size, 0x1234_5678);
    let selector = crate::selector_for(board.name());
    let t0 = Instant::now();
    let probe = Lister::new()
        .open(crate::probe_selector(board.name()))
        .map_err(|source| BenchError::Open { selector: selector.clone(), source })?;
    let target = chip.probe_rs_target.clone();
    let mut session = probe
        .attach(target.as_str(), Permissions::default())
        .map_err(|source| BenchError::Attach { target: target.clone(), source })?;
    let attach = t0.elapsed();

    let before = board.debug().counters().wait()?;
    let v0 = board.now().wait()?;
    let stats0 = crate::probe_stats(board.name()).unwrap_or_default();
    let t1 = Instant::now();
    let mut loader = session.target().flash_loader();
    let bin = BinLoader(BinOptions { base_address: Some(opts.address as u64), skip: 0 });
    loader.load_image(&mut session, &mut Cursor::new(&image), bin, None).map_err(|source| BenchError::Load {
        bytes: image.len(),
        address: opts.address,
        source,
    })?;
    let mut options = DownloadOptions::default();
    options.verify = opts.verify;
    loader.commit(&mut session, options).map_err(|source| BenchError::Flash {
        bytes: image.len(),
        address: opts.address,
        source,
    })?;
    let wall = t1.elapsed();
    let after = board.debug().counters().wait()?;
    let v1 = board.now().wait()?;
    let stats1 = crate::probe_stats(board.name()).unwrap_or_default();
    drop(session);

    let flashed = board.peek(opts.address, image.len()).wait()?;
    if let Some(i) = (0..image.len()).find(|&i| flashed[i] != image[i]) {
        return Err(BenchError::Mismatch { address: opts.address + i as u32, expected: image[i], found: flashed[i] });
    }
    let (a, b) = (before.accesses, after.accesses);
    let instructions = after.instructions - before.instructions;
    Ok(FlashBench {
        chip: chip.name.clone(),
        probe_rs_target: target,
        bytes: image.len(),
        address: opts.address,
        verify: opts.verify,
        attach_ms: attach.as_secs_f64() * 1e3,
        wall_ms: wall.as_secs_f64() * 1e3,
        emulated_instructions: instructions,
        emulated_cycles: after.cycles - before.cycles,
        virtual_time_ms: (v1 - v0).to_std().as_secs_f64() * 1e3,
        mips: instructions as f64 / wall.as_secs_f64().max(1e-9) / 1e6,
        kib_per_s: image.len() as f64 / 1024.0 / wall.as_secs_f64().max(1e-9),
        flash_programs: b.flash_programs - a.flash_programs,
        flash_page_erases: b.flash_page_erases - a.flash_page_erases,
        flash_reg_accesses_cpu: (b.flash_reg_reads_cpu + b.flash_reg_writes_cpu)
            - (a.flash_reg_reads_cpu + a.flash_reg_writes_cpu),
        flash_reg_accesses_debug: (b.flash_reg_reads_debug + b.flash_reg_writes_debug)
            - (a.flash_reg_reads_debug + a.flash_reg_writes_debug),
        probe_transfers: stats1.dap.transfers - stats0.dap.transfers,
        probe_memory_accesses: stats1.dap.memory_accesses - stats0.dap.memory_accesses,
    })
}
