//! One board opened for a run: every scenario step carried out over the board's backends
//! ([`crate::backend`]). The same code runs against lab hardware and virtual boards.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hil_bootloader_host::clock::Deadline;

use hil_bootloader_host::transcript::{Direction, Event, Transcript};
use hil_bootloader_host::uart::{Config as UartConfig, UartClient, UartError};
use hil_chips::Chip;
use hil_config::scenario::{
    Action, BoardState, EraseMode, ExpectMemory, ExpectRegister, Flash, FlashTarget, ImageRef, NamedRegion, NamedValue,
    RegionRef, ResetFlag, ResetVia, ValueRef, Via, WriteOptionBytes,
};
use hil_config::{Board, PinLevel, Step};
use hil_report::{Diagnosis, Evidence, Status, TranscriptEntry};

use crate::backend::Backends;
use crate::engine::{BoardSession, StepCx, StepOutcome};
use crate::probe_ops::ProbeOps;

/// What goes wrong inside a bootloader session: the protocol, or a check of the rig's.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Uart(#[from] UartError),
    #[error("{0}")]
    Check(String),
}

/// An image the scenario flashed, kept for values (`image.base`, `symbol:NAME`) and comparisons.
#[derive(Clone, Debug)]
pub struct FlashedImage {
    pub name: String,
    pub image: hil_image::Image,
    /// The ELF file, when the image came from one (for symbols).
    pub elf: Option<Vec<u8>>,
}

impl FlashedImage {
    /// Address of the vector table: the lowest loaded address.
    pub fn base(&self) -> Option<u32> {
        self.image.segments.first().map(|s| s.address)
    }

    /// Address of an ELF symbol (Thumb bit cleared for functions).
    pub fn symbol(&self, name: &str) -> Option<u32> {
        use object::{Object, ObjectSymbol, SymbolKind};
        let elf = self.elf.as_ref()?;
        let file = object::File::parse(elf.as_slice()).ok()?;
        let sym = file.symbols().find(|s| s.name() == Ok(name))?;
        let addr = sym.address() as u32;
        Some(if sym.kind() == SymbolKind::Text { addr & !1 } else { addr })
    }
}

/// Opens (or re-opens) the board's probe.
pub type ProbeFactory = Box<dyn Fn() -> Result<Box<dyn ProbeOps>, String> + Send>;

/// The steps' view of one board.
pub struct RigSession {
    pub board: Board,
    pub chip: &'static Chip,
    pub backends: Backends,
    pub probe: Option<Box<dyn ProbeOps>>,
    /// Opens the probe again: a power cycle ends a debug session on real hardware (the core's
    /// debug registers reset at power-on), so the session re-attaches after one.
    pub probe_factory: Option<ProbeFactory>,
    /// Bootloader protocol traffic of the current scenario.
    pub transcript: Transcript,
    pub last_image: Option<FlashedImage>,
    /// Where the scenario believes the board is (the strategy updates it).
    pub state: Option<BoardState>,
    /// Address of the last Go / DFU leave since the last reset (for diagnosis).
    pub last_go: Option<u32>,
    /// The level the rig last drove BOOT0 to (for diagnosis).
    pub boot0_driven: Option<bool>,
    /// Called with (bytes written, total) while flashing (a progress bar on a terminal).
    pub progress: Option<Box<dyn FnMut(u64, u64) + Send>>,
}

fn outcome_from<T>(r: Result<T, String>) -> StepOutcome {
    match r {
        Ok(_) => StepOutcome::passed(),
        Err(e) => StepOutcome::failed(e),
    }
}

impl RigSession {
    /// A session; with a probe factory the probe is opened at once (a bad probe fails early).
    pub fn new(board: Board, backends: Backends, probe_factory: Option<ProbeFactory>) -> Result<RigSession, String> {
        let chip = Chip::by_name(&board.chip.value).ok_or_else(|| format!("unknown chip {}", board.chip.value))?;
        let probe = probe_factory.as_ref().map(|f| f()).transpose()?;
        Ok(RigSession {
            board,
            chip,
            backends,
            probe,
            probe_factory,
            transcript: Transcript::new(),
            last_image: None,
            state: None,
            last_go: None,
            boot0_driven: None,
            progress: None,
        })
    }

    /// The probe, re-attached if a power cycle ended the previous session.
    pub fn probe(&mut self) -> Result<&mut Box<dyn ProbeOps>, String> {
        if self.probe.is_none()
            && let Some(f) = &self.probe_factory
        {
            self.probe = Some(f().map_err(|e| format!("re-attaching the probe: {e}"))?);
        }
        self.probe.as_mut().ok_or_else(|| format!("board `{}` has no debug probe", self.board.name.value))
    }

    /// The board lost power: its debug session is gone.
    fn forget_probe(&mut self) {
        self.probe = None;
    }

    fn serial(&mut self) -> Result<&mut crate::serial_link::SerialLink, String> {
        let name = self.board.name.value.clone();
        self.backends.serial.as_mut().ok_or_else(|| format!("board `{name}` has no serial link"))
    }

    fn lines(&mut self) -> Result<&mut Box<dyn crate::backend::ControlLines + Send>, String> {
        let name = self.board.name.value.clone();
        self.backends.lines.as_mut().ok_or_else(|| format!("board `{name}` cannot drive BOOT0/NRST"))
    }

    pub fn application_base(&self) -> u32 {
        self.board.application_base(self.chip)
    }

    /// Run `f` with an AN3155 client that has the serial port to itself. Reply deadlines never
    /// exceed the step's.
    pub fn uart_session<R>(
        &mut self,
        cx: &StepCx,
        f: impl FnOnce(&mut UartClient) -> Result<R, SessionError>,
    ) -> Result<R, String> {
        let transcript = self.transcript.clone();
        let remaining = cx.remaining();
        let link = self.serial()?;
        let result = link
            .exclusive(|port, clock| {
                let mut config = UartConfig::default();
                let t = &mut config.timeouts;
                for d in [
                    &mut t.read,
                    &mut t.block_write,
                    &mut t.page_erase,
                    &mut t.mass_erase,
                    &mut t.readout_unprotect,
                    &mut t.checksum,
                    &mut t.resync,
                ] {
                    *d = (*d).min(remaining.max(Duration::from_millis(50)));
                }
                config.sync_attempts = sync_attempts_within(remaining, t.read, config.sync_attempts);
                let mut client = UartClient::with_clock(port, config, clock);
                client.set_transcript(Some(Box::new(transcript)));
                f(&mut client)
            })
            .map_err(|e| e.to_string())?;
        result.map_err(|e| e.to_string())
    }

    /// Resolve a value written in a scenario.
    pub fn resolve(&mut self, v: &ValueRef) -> Result<u32, String> {
        Ok(match v {
            ValueRef::Literal(x) => *x,
            ValueRef::Symbol(name) => {
                let img =
                    self.last_image.as_ref().ok_or_else(|| format!("symbol:{name} needs an image flashed first"))?;
                img.symbol(name).ok_or_else(|| format!("symbol `{name}` is not in {}", img.name))?
            }
            ValueRef::Named(n) => match n {
                NamedValue::ApplicationBase => self.application_base(),
                NamedValue::SystemMemoryBase => self.chip.bootloader.jump_address,
                NamedValue::ApplicationInitialSp | NamedValue::ApplicationResetHandler => {
                    let base = self.application_base();
                    let word = if *n == NamedValue::ApplicationInitialSp { 0 } else { 4 };
                    let v = self.read_word(base + word)?;
                    if word == 4 { v & !1 } else { v }
                }
                NamedValue::ImageBase | NamedValue::ImageInitialSp | NamedValue::ImageResetHandler => {
                    let img =
                        self.last_image.as_ref().ok_or_else(|| format!("{} needs an image flashed first", n.name()))?;
                    let base = img.base().ok_or("the image flashed last is empty")?;
                    match n {
                        NamedValue::ImageBase => base,
                        NamedValue::ImageInitialSp => {
                            img.image.read_u32(base).ok_or("the image has no vector table")?
                        }
                        _ => img.image.read_u32(base + 4).ok_or("the image has no vector table")? & !1,
                    }
                }
            },
        })
    }

    /// A word of the board's memory: from the image flashed last when it covers the address,
    /// else through the probe.
    fn read_word(&mut self, addr: u32) -> Result<u32, String> {
        if let Some(v) = self.last_image.as_ref().and_then(|i| i.image.read_u32(addr)) {
            return Ok(v);
        }
        let bytes = self.probe()?.read_memory(addr, 4)?;
        Ok(u32::from_le_bytes(bytes[..4].try_into().map_err(|_| "short read")?))
    }

    pub fn region(&self, r: &RegionRef) -> Result<(u32, u64), String> {
        let m = &self.chip.memory;
        Ok(match r {
            RegionRef::Range { base, size } => (base.0, size.0 as u64),
            RegionRef::Named(n) => match n {
                NamedRegion::Application => {
                    let a = self.application_base();
                    (a, m.flash.area().end() - a as u64)
                }
                NamedRegion::SystemMemory => (m.system_memory.base, m.system_memory.size as u64),
                NamedRegion::Flash => (m.flash.base, m.flash.size as u64),
                NamedRegion::Sram => (m.sram.base, m.sram.size as u64),
                NamedRegion::Bootloader => {
                    let bl =
                        self.board.layout.bootloader.as_ref().ok_or("the board's layout has no bootloader region")?;
                    (bl.value.base.0, bl.value.size.0 as u64)
                }
                NamedRegion::Image => {
                    let img = self.last_image.as_ref().ok_or("region `image` needs an image flashed first")?;
                    let first = img.image.segments.first().ok_or("empty image")?;
                    let last = img.image.segments.last().ok_or("empty image")?;
                    (first.address, last.end() - first.address as u64)
                }
            },
        })
    }

    /// Load an image a step names: a fixture (built for this board's layout) or a file.
    pub fn load_image(
        &self,
        r: &ImageRef,
        bin_base: Option<u32>,
        scenario_file: &Path,
    ) -> Result<FlashedImage, String> {
        match r {
            ImageRef::Fixture { name, base } => {
                let fx = match base {
                    Some(b) => hil_fixtures::get(name, *b),
                    None => hil_fixtures::all()
                        .iter()
                        .find(|f| f.name == name && f.base == self.application_base())
                        .or_else(|| hil_fixtures::default_of(name)),
                }
                .ok_or_else(|| format!("fixture `{r}` is not built (see fixtures-firmware/fixtures.toml)"))?;
                let image = hil_image::Image::from_elf(&format!("fixture:{}@{:#010x}", fx.name, fx.base), fx.elf)
                    .map_err(|e| e.to_string())?;
                Ok(FlashedImage { name: r.to_string(), image, elf: Some(fx.elf.to_vec()) })
            }
            ImageRef::File(p) => {
                let path = hil_config::validate::resolve_relative(scenario_file, p);
                let image = hil_image::Image::load(&path, bin_base).map_err(|e| e.to_string())?;
                let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let elf = bytes.starts_with(b"\x7fELF").then_some(bytes);
                Ok(FlashedImage { name: path.display().to_string(), image, elf })
            }
        }
    }

    fn preflight(&self, img: &FlashedImage, what: FlashTarget) -> Result<Vec<Evidence>, StepOutcome> {
        let report = preflight_report(&self.board, self.chip, &img.image, what).map_err(StepOutcome::error)?;
        let text = report.to_string();
        if report.passed() {
            Ok(if text.is_empty() { vec![] } else { vec![Evidence::Text { label: "preflight warnings".into(), text }] })
        } else {
            let first = report.errors().next().map(|f| f.to_string()).unwrap_or_default();
            Err(StepOutcome::failed(format!("preflight refused {}: {first}", img.name))
                .with_evidence(Evidence::Text { label: "preflight".into(), text }))
        }
    }

    fn flash_step(&mut self, f: &Flash, cx: &StepCx) -> StepOutcome {
        let img = match self.load_image(&f.image.value, f.base.map(|b| b.0), &cx.scenario_file) {
            Ok(i) => i,
            Err(e) => return StepOutcome::error(e),
        };
        let mut evidence = match self.preflight(&img, f.target) {
            Ok(ev) => ev,
            Err(refused) => return refused,
        };
        let (clock, started) = (cx.clock().clone(), cx.clock().now());
        let bytes: u64 = img.image.segments.iter().map(|s| s.data.len() as u64).sum();
        let result = match f.via {
            Via::Probe => {
                let (name, elf) = (img.name.clone(), img.elf.clone());
                self.probe().and_then(|p| p.flash(&name, &img.image, elf.as_deref(), f.verify).map(|_| ()))
            }
            Via::Uart => self.flash_uart(&img, f.erase, f.verify, cx).map(|ev| evidence.extend(ev)),
            Via::Dfu => self.flash_dfu(&img, f.erase, f.verify),
        };
        evidence.push(Evidence::Measurement { label: "bytes written".into(), value: bytes as f64, unit: "B".into() });
        evidence.push(Evidence::Measurement {
            label: "flash time".into(),
            value: clock.now().saturating_sub(started).as_secs_f64(),
            unit: "s".into(),
        });
        self.last_image = Some(img);
        let mut out = outcome_from(result);
        out.evidence.extend(evidence);
        out
    }

    /// AN3155 flashing: erase what the image touches (or everything), write in 256-byte blocks,
    /// then verify through the fastest path the board has: the bootloader's checksum when its Get
    /// lists Get Checksum (0xA1), else a read-back through the probe (SWD is far faster than the
    /// UART), else a read-back through the bootloader. Phase timings go into the evidence.
    fn flash_uart(
        &mut self,
        img: &FlashedImage,
        erase: EraseMode,
        verify: bool,
        cx: &StepCx,
    ) -> Result<Vec<Evidence>, String> {
        let flash = self.chip.memory.flash.clone();
        let ranges: Vec<(u32, Vec<u8>)> = img.image.ranges().into_iter().map(|(a, d)| (a, d.to_vec())).collect();
        let mut pages: Vec<u16> = ranges
            .iter()
            .flat_map(|(a, d)| {
                let first = (a - flash.base) / flash.page_size;
                let last = (a + d.len() as u32 - 1 - flash.base) / flash.page_size;
                first..=last
            })
            .map(|p| p as u16)
            .collect();
        pages.dedup();
        let total: u64 = ranges.iter().map(|(_, d)| d.len() as u64).sum();
        let mut progress = self.progress.take();
        let probe_available = self.probe_factory.is_some();
        let mut phases: Vec<(&'static str, f64)> = Vec::new();
        let r = self.uart_session(cx, |c| {
            c.connect()?;
            let t = cx.clock().now();
            match erase {
                EraseMode::Mass => c.mass_erase()?,
                EraseMode::Touched => c.erase_pages(&pages)?,
            }
            phases.push(("erase time", cx.clock().now().saturating_sub(t).as_secs_f64()));
            let t = cx.clock().now();
            let mut done = 0u64;
            for (addr, data) in &ranges {
                // Progress per 4 KiB; the client writes 256-byte blocks either way.
                for (i, chunk) in data.chunks(4096).enumerate() {
                    c.write(addr + (i * 4096) as u32, chunk)?;
                    done += chunk.len() as u64;
                    if let Some(p) = progress.as_mut() {
                        p(done, total);
                    }
                }
            }
            phases.push(("write time", cx.clock().now().saturating_sub(t).as_secs_f64()));
            let checksum = c.commands().is_some_and(|g| g.supports(hil_bootloader_host::uart::Command::GetChecksum));
            if verify && checksum {
                let t = cx.clock().now();
                for (addr, data) in &ranges {
                    let mut padded = data.clone();
                    padded.resize(data.len().div_ceil(4) * 4, 0xFF);
                    let got = c.get_checksum(*addr, padded.len() as u32)?;
                    let want = hil_bootloader_host::uart::stm32_crc(&padded);
                    if got != want {
                        return Err(SessionError::Check(format!(
                            "verify: Get Checksum of {addr:#010x}+{:#x} is {got:#010x}, the image gives {want:#010x}",
                            padded.len()
                        )));
                    }
                }
                phases.push(("verify time (Get Checksum)", cx.clock().now().saturating_sub(t).as_secs_f64()));
            } else if verify && !probe_available {
                let t = cx.clock().now();
                for (addr, data) in &ranges {
                    let back = c.read(*addr, data.len())?;
                    if let Some(i) = back.iter().zip(data).position(|(a, b)| a != b) {
                        return Err(SessionError::Check(format!(
                            "verify: flash at {:#010x} reads {:#04x}, the image has {:#04x}",
                            addr + i as u32,
                            back[i],
                            data[i]
                        )));
                    }
                }
                phases
                    .push(("verify time (read back over the UART)", cx.clock().now().saturating_sub(t).as_secs_f64()));
            }
            Ok(checksum)
        });
        self.progress = progress;
        let checksum_used = r?;
        if verify && !checksum_used && probe_available {
            let t = cx.clock().now();
            for (addr, data) in &ranges {
                let back = self.probe()?.read_memory(*addr, data.len())?;
                if let Some(i) = back.iter().zip(data).position(|(a, b)| a != b) {
                    return Err(format!(
                        "verify: flash at {:#010x} reads {:#04x} through the probe, the image has {:#04x}",
                        addr + i as u32,
                        back[i],
                        data[i]
                    ));
                }
            }
            phases
                .push(("verify time (read back through the probe)", cx.clock().now().saturating_sub(t).as_secs_f64()));
        }
        Ok(phases
            .into_iter()
            .map(|(label, value)| Evidence::Measurement { label: label.into(), value, unit: "s".into() })
            .collect())
    }

    fn flash_dfu(&mut self, img: &FlashedImage, erase: EraseMode, verify: bool) -> Result<(), String> {
        let mut dfu = self.open_dfu()?;
        let ranges = img.image.ranges();
        if erase == EraseMode::Mass {
            dfu.mass_erase().map_err(|e| e.to_string())?;
        }
        dfu.download_ranges(&ranges).map_err(|e| e.to_string())?;
        if verify {
            for (addr, data) in &ranges {
                let back = dfu.upload(*addr, data.len()).map_err(|e| e.to_string())?;
                if let Some(i) = back.iter().zip(data.iter()).position(|(a, b)| a != b) {
                    return Err(format!(
                        "verify: flash at {:#010x} reads {:#04x}, the image has {:#04x}",
                        addr + i as u32,
                        back[i],
                        data[i]
                    ));
                }
                if back.len() < data.len() {
                    return Err(format!(
                        "verify: upload at {addr:#010x} returned {} of {} bytes",
                        back.len(),
                        data.len()
                    ));
                }
            }
        }
        Ok(())
    }

    fn open_dfu(
        &mut self,
    ) -> Result<hil_bootloader_host::dfu::DfuSeClient<Box<dyn hil_bootloader_host::dfu::ControlTransfer + Send>>, String>
    {
        let name = self.board.name.value.clone();
        let usb = self.backends.usb.as_mut().ok_or_else(|| format!("board `{name}` has no USB DFU connection"))?;
        let dev = usb.open()?;
        let mut client = hil_bootloader_host::dfu::DfuSeClient::open(
            dev,
            0,
            Default::default(),
            Some(Box::new(self.transcript.clone())),
        )
        .map_err(|e| e.to_string())?;
        client.set_transcript(Some(Box::new(self.transcript.clone())));
        Ok(client)
    }

    /// The ROM acknowledges Readout Unprotect before it mass-erases the flash and reloads the
    /// option bytes with a reset (AN3155 3.14; AN2606 "the device is reset" after the second ACK),
    /// so the step ends only when that is done: through the probe, when FLASH_OPTR shows RDP level
    /// 0 (it changes only at the option reload, RM0444 3.4.1); without a probe, after the chip's
    /// maximum mass-erase time and a margin for the reset.
    fn await_protection_removed(&mut self, cx: &StepCx) -> Result<(), String> {
        let chip = self.chip;
        let reload = (|| {
            let layout = chip.option_bytes.as_ref()?;
            Some((
                chip.flash_controller.as_ref()?.base + layout.word("USER")?.register,
                layout.field("RDP")?.clone(),
                layout.rdp_levels.level0,
            ))
        })();
        let max_erase = chip
            .flash_timing
            .as_ref()
            .map_or(Duration::from_millis(100), |t| Duration::from_micros(u64::from(t.mass_erase_us.max)));
        let margin = Duration::from_millis(50);
        let Some((optr, rdp, level0)) = reload.filter(|_| self.probe_factory.is_some() || self.probe.is_some()) else {
            cx.sleep(max_erase + margin);
            return Ok(());
        };
        let started = cx.clock().now();
        let mut last: String;
        loop {
            // During the reset the probe may lose its session; a fresh one is made on the next read.
            match self.probe().and_then(|p| p.read_memory(optr, 4)) {
                Ok(b) if b.len() >= 4 => {
                    let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if rdp.get(v) == u32::from(level0) {
                        // FLASH_OPTR holds what the ROM wrote before the option reload has made it
                        // effective (RM0444 3.4.1: written values are loaded at OBL): level 0 there
                        // is not yet level 0 for the debugger. Done only when flash reads too.
                        let flash = chip.memory.flash.base;
                        match self.probe().and_then(|p| p.read_memory(flash, 4)) {
                            Ok(_) => return Ok(()),
                            Err(e) => {
                                last = format!(
                                    "FLASH_OPTR ({optr:#010x}) = {v:#010x} (RDP level 0 written) but flash at \
                                     {flash:#010x} still refuses the debugger: {e}"
                                );
                                self.forget_probe();
                            }
                        }
                    } else {
                        last = format!("FLASH_OPTR ({optr:#010x}) = {v:#010x}, RDP = {:#04x}", rdp.get(v));
                    }
                }
                Ok(_) => last = format!("short read of FLASH_OPTR ({optr:#010x})"),
                Err(e) => {
                    last = e;
                    self.forget_probe();
                }
            }
            if cx.expired() {
                return Err(format!(
                    "readout protection still active {} ms after Readout Unprotect was acknowledged: {last}",
                    cx.clock().now().saturating_sub(started).as_millis()
                ));
            }
            cx.sleep(Duration::from_millis(5));
        }
    }

    fn write_option_bytes(&mut self, w: &WriteOptionBytes, cx: &StepCx) -> Result<(), String> {
        let bits = hil_config::boards::OptionBits {
            nboot0: w.nboot0,
            nboot1: w.nboot1,
            nboot_sel: w.nboot_sel,
            rdp: w.rdp.as_ref().map(|r| r.value),
            hardware_watchdog: w.hardware_watchdog,
        };
        if bits.rdp == Some(2) && !self.board.allow_rdp_level2 {
            // Validation refuses this too; the rig never sets level 2 on its own.
            return Err(format!(
                "refusing RDP level 2 on board `{}`: it does not set allow-rdp-level2",
                self.board.name.value
            ));
        }
        let chip = self.chip;
        let layout = chip.option_bytes.as_ref().ok_or_else(|| format!("{} has no option byte layout", chip.name))?;
        let user = layout.word("USER").ok_or("no USER option word")?;
        let fc = chip.flash_controller.as_ref().ok_or_else(|| format!("{} has no flash controller data", chip.name))?;
        match w.via {
            Via::Probe => {
                // RM0444 3.4.2: unlock FLASH_CR and the options, write FLASH_OPTR, OPTSTRT, wait
                // for BSY1, then OBL_LAUNCH reloads the option bytes with a reset.
                let base = fc.base;
                let p = self.probe()?;
                let current = u32::from_le_bytes(
                    p.read_memory(base + user.register, 4)?[..4].try_into().map_err(|_| "short read")?,
                );
                let value = crate::virtual_backend::apply_option_bits(chip, current, &bits)?;
                let word = |p: &mut Box<dyn ProbeOps>, off: u32, v: u32| p.write_memory(base + off, &v.to_le_bytes());
                word(p, 0x08, fc.keys[0])?;
                word(p, 0x08, fc.keys[1])?;
                word(p, 0x0C, fc.option_keys[0])?;
                word(p, 0x0C, fc.option_keys[1])?;
                word(p, user.register, value)?;
                let cr = u32::from_le_bytes(p.read_memory(base + 0x14, 4)?[..4].try_into().map_err(|_| "short read")?);
                word(p, 0x14, cr | 1 << 17)?;
                // RM0444 3.4.2: option programming takes milliseconds; 2 s on the board's clock.
                let deadline = Deadline::after(cx.clock(), Duration::from_secs(2).min(cx.remaining()));
                loop {
                    let sr =
                        u32::from_le_bytes(p.read_memory(base + 0x10, 4)?[..4].try_into().map_err(|_| "short read")?);
                    if sr & (1 << 16) == 0 {
                        if sr & 0xC3FA != 0 {
                            return Err(format!("option programming failed: FLASH_SR = {sr:#010x}"));
                        }
                        break;
                    }
                    if deadline.passed() {
                        return Err(format!("option programming did not finish: FLASH_SR = {sr:#010x}"));
                    }
                    cx.sleep(Duration::from_millis(1));
                }
                if w.launch {
                    let cr =
                        u32::from_le_bytes(p.read_memory(base + 0x14, 4)?[..4].try_into().map_err(|_| "short read")?);
                    // The reset that follows may cut the probe's write short; that is expected.
                    let _ = word(p, 0x14, cr | 1 << 27);
                }
                Ok(())
            }
            Via::Uart => {
                let ob = chip.memory.option_bytes.base;
                let comp = layout.complement_offset;
                self.uart_session(cx, |c| {
                    c.connect()?;
                    let current = u32::from_le_bytes(c.read(ob + user.offset, 4)?[..4].try_into().expect("4 bytes"));
                    let value =
                        crate::virtual_backend::apply_option_bits(chip, current, &bits).map_err(SessionError::Check)?;
                    let mut dw = Vec::with_capacity(8);
                    dw.extend_from_slice(&value.to_le_bytes());
                    dw.resize(comp as usize, 0xFF);
                    dw.extend_from_slice(&(!value).to_le_bytes());
                    // The ROM applies the option bytes and reloads them after the write (AN3155 3.6).
                    Ok(c.write(ob + user.offset, &dw)?)
                })
            }
            Via::Dfu => Err("write-option-bytes via dfu is not supported".into()),
        }
    }

    fn expect_register(&mut self, e: &ExpectRegister) -> StepOutcome {
        let value = match self.probe().and_then(|p| p.read_register(e.register)) {
            Ok(v) => v,
            Err(err) => return StepOutcome::error(err),
        };
        let name = format!("{:?}", e.register).to_lowercase();
        let mask = e.mask.map(|m| m.0).unwrap_or(u32::MAX);
        let ev = Evidence::Registers { label: format!("{name} read"), values: BTreeMap::from([(name.clone(), value)]) };
        if let Some(eq) = &e.equals {
            let want = match self.resolve(&eq.value) {
                Ok(v) => v,
                Err(err) => return StepOutcome::error(err),
            };
            if value & mask != want & mask {
                return StepOutcome::failed(format!("{name} is {value:#010x}, expected {} = {want:#010x}", eq.value))
                    .with_evidence(ev);
            }
        }
        if let Some(r) = &e.within {
            let (base, len) = match self.region(&r.value) {
                Ok(x) => x,
                Err(err) => return StepOutcome::error(err),
            };
            if (value as u64) < base as u64 || value as u64 >= base as u64 + len {
                return StepOutcome::failed(format!(
                    "{name} is {value:#010x}, outside {} ({base:#010x}..{:#010x})",
                    region_name(&r.value),
                    base as u64 + len
                ))
                .with_evidence(ev);
            }
        }
        StepOutcome::passed().with_evidence(ev)
    }

    fn expect_memory(&mut self, m: &ExpectMemory) -> StepOutcome {
        let addr = match self.resolve(&m.address.value) {
            Ok(a) => a,
            Err(e) => return StepOutcome::error(e),
        };
        let len = m.length.0 as usize;
        let bytes = match self.probe().and_then(|p| p.read_memory(addr, len)) {
            Ok(b) => b,
            Err(e) => return StepOutcome::error(e),
        };
        let range = format!("{addr:#010x}..{:#010x}", addr as u64 + len as u64);
        if let Some(crc) = m.crc32 {
            let got = crc32(&bytes);
            if got != crc.0 {
                return StepOutcome::failed(format!("CRC-32 of {range} is {got:#010x}, expected {:#010x}", crc.0));
            }
        }
        if let Some(eq) = &m.equals
            && let Some(i) = bytes.iter().zip(eq).position(|(a, b)| a != b)
        {
            return StepOutcome::failed(format!(
                "byte at {:#010x} is {:#04x}, expected {:#04x}",
                addr + i as u32,
                bytes[i],
                eq[i]
            ));
        }
        if let Some(erased) = m.erased {
            let is = bytes.iter().all(|b| *b == 0xFF);
            if is != erased {
                let first = bytes
                    .iter()
                    .position(|b| *b != 0xFF)
                    .map(|i| format!(" (first programmed byte at {:#010x})", addr + i as u32))
                    .unwrap_or_default();
                return StepOutcome::failed(format!(
                    "{range} is {}erased, expected {}erased{first}",
                    if is { "" } else { "not " },
                    if erased { "" } else { "not " }
                ));
            }
        }
        if m.matches_image == Some(true) {
            let Some(img) = &self.last_image else {
                return StepOutcome::error("matches-image needs an image flashed first");
            };
            for (i, b) in bytes.iter().enumerate() {
                let a = addr + i as u32;
                if let Some(want) = img.image.bytes_at(a, 1)
                    && want[0] != *b
                {
                    return StepOutcome::failed(format!(
                        "byte at {a:#010x} is {b:#04x}, the image has {:#04x}",
                        want[0]
                    ));
                }
            }
        }
        StepOutcome::passed()
    }

    fn expect_reset_cause(&mut self, flag: ResetFlag) -> StepOutcome {
        let Some(d) = self.chip.diagnosis.clone() else {
            return StepOutcome::error(format!("{} has no reset-flag data", self.chip.name));
        };
        let Some(addr) = d.address_of(&d.reset_flags.register) else {
            return StepOutcome::error(format!(
                "{}: reset flag register {} has no address",
                self.chip.name, d.reset_flags.register
            ));
        };
        let v = match self.probe().and_then(|p| p.read_memory(addr, 4)) {
            Ok(b) => u32::from_le_bytes(b[..4].try_into().unwrap_or([0; 4])),
            Err(e) => return StepOutcome::error(e),
        };
        let f = &d.reset_flags;
        let names = [
            (f.power_on, "power-on"),
            (f.pin, "pin"),
            (f.software, "software"),
            (f.independent_watchdog, "independent-watchdog"),
            (f.window_watchdog, "window-watchdog"),
            (f.option_byte_load, "option-byte-load"),
            (f.low_power, "low-power"),
        ];
        let set: Vec<&str> = names.iter().filter(|(b, _)| v & (1 << b) != 0).map(|(_, n)| *n).collect();
        let bit = match flag {
            ResetFlag::PowerOn => f.power_on,
            ResetFlag::Pin => f.pin,
            ResetFlag::Software => f.software,
            ResetFlag::IndependentWatchdog => f.independent_watchdog,
            ResetFlag::WindowWatchdog => f.window_watchdog,
            ResetFlag::OptionByteLoad => f.option_byte_load,
        };
        let ev = Evidence::Registers {
            label: "reset flags".into(),
            values: BTreeMap::from([(d.reset_flags.register.clone(), v)]),
        };
        if v & (1 << bit) != 0 {
            StepOutcome::passed().with_evidence(ev)
        } else {
            StepOutcome::failed(format!(
                "{} = {v:#010x} shows {} reset, not {}",
                d.reset_flags.register,
                if set.is_empty() { "no".to_string() } else { set.join(" + ") },
                format!("{flag:?}").to_lowercase()
            ))
            .with_evidence(ev)
        }
    }

    fn expect_usb(&mut self, present: bool, cx: &StepCx) -> StepOutcome {
        let name = self.board.name.value.clone();
        let Some(usb) = self.backends.usb.as_mut() else {
            return StepOutcome::error(format!("board `{name}` has no USB connection"));
        };
        loop {
            match usb.present() {
                Ok(p) if p == present => return StepOutcome::passed(),
                Ok(_) => {}
                Err(e) => return StepOutcome::error(e),
            }
            if cx.expired() {
                return StepOutcome::failed(format!(
                    "the DFU device is {}",
                    if present { "not present" } else { "still present" }
                ));
            }
            // A host's USB stack notices a (dis)connection within a few frames; poll on the board's
            // clock.
            cx.sleep(Duration::from_millis(20));
        }
    }

    fn expect_bootloader(&mut self, via: Via, pid: Option<u32>, cx: &StepCx) -> StepOutcome {
        let want = pid.unwrap_or(self.chip.identity.dev_id as u32);
        match via {
            Via::Uart => match self.uart_session(cx, |c| Ok(c.connect()?)) {
                Ok(info) if info.id.pid as u32 == want => StepOutcome::passed(),
                Ok(info) => StepOutcome::failed(format!(
                    "the bootloader answered with PID {:#06x}, expected {want:#06x}",
                    info.id.pid
                )),
                Err(e) => StepOutcome::failed(format!(
                    "no bootloader answer on {}: {e}",
                    self.backends.serial.as_ref().map(|s| s.name().to_string()).unwrap_or_default()
                )),
            },
            Via::Dfu => {
                let present = self.expect_usb(true, cx);
                if present.status != Status::Passed {
                    return StepOutcome::failed(format!("no DFU device: {}", present.message.unwrap_or_default()));
                }
                match self.open_dfu().and_then(|mut d| d.get_commands().map_err(|e| e.to_string())) {
                    Ok(cmds) if cmds.contains(&0x21) => StepOutcome::passed(),
                    Ok(cmds) => StepOutcome::failed(format!(
                        "the DFU device lists DfuSe commands {cmds:02x?}, without Set Address (0x21)"
                    )),
                    Err(e) => StepOutcome::failed(format!("the DFU device does not answer: {e}")),
                }
            }
            Via::Probe => StepOutcome::error("expect-bootloader via probe is not meaningful"),
        }
    }

    fn reset(&mut self, via: ResetVia) -> Result<(), String> {
        match via {
            ResetVia::Nrst => {
                let lines = self.lines()?;
                lines.set_reset(true).map_err(|e| e.to_string())?;
                // NRST pulse: well above the 20 us minimum (DS12232 NRST characteristics).
                lines.wait(Duration::from_millis(1));
                lines.set_reset(false).map_err(|e| e.to_string())
            }
            ResetVia::Probe => self.probe()?.reset_run(),
            ResetVia::Power => self.power_cycle(Duration::from_millis(10)),
        }
    }

    fn power_cycle(&mut self, off: Duration) -> Result<(), String> {
        let name = self.board.name.value.clone();
        // Detach first, as a probe loses its target when power goes.
        self.forget_probe();
        self.backends.power.as_mut().ok_or_else(|| format!("board `{name}` cannot switch its power"))?.power_cycle(off)
    }

    /// Transcript records as report entries, relative to the transcript's start.
    pub fn transcript_evidence(&self) -> Option<Evidence> {
        let start = self.transcript.start();
        let entries: Vec<TranscriptEntry> = self
            .transcript
            .records()
            .into_iter()
            .map(|r| {
                let wall_offset_ms = r.at.saturating_duration_since(start).as_millis() as u64;
                match r.event {
                    Event::Bytes { direction, data } => TranscriptEntry {
                        wall_offset_ms,
                        direction: if direction == Direction::HostToDevice { "tx" } else { "rx" }.into(),
                        bytes: hex(&data),
                        decoded: decode_an3155(direction, &data),
                    },
                    Event::Control { setup, data, outcome } => TranscriptEntry {
                        wall_offset_ms,
                        direction: if setup.is_in() { "rx" } else { "tx" }.into(),
                        bytes: hex(&data),
                        decoded: Some(match outcome {
                            Ok(()) => setup.describe(),
                            Err(e) => format!("{} -> {e}", setup.describe()),
                        }),
                    },
                    Event::Note(text) => TranscriptEntry {
                        wall_offset_ms,
                        direction: "note".into(),
                        bytes: String::new(),
                        decoded: Some(text),
                    },
                }
            })
            .collect();
        (!entries.is_empty()).then(|| Evidence::Transcript { channel: "bootloader".into(), entries })
    }
}

fn region_name(r: &RegionRef) -> String {
    match r {
        RegionRef::Named(n) => format!("{n:?}").to_lowercase(),
        RegionRef::Range { base, size } => format!("{base}+{:#x}", size.0),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

/// Meaning of single AN3155 bytes, for transcripts.
fn decode_an3155(direction: Direction, data: &[u8]) -> Option<String> {
    match (direction, data) {
        (Direction::DeviceToHost, [0x79]) => Some("ACK".into()),
        (Direction::DeviceToHost, [0x1F]) => Some("NACK".into()),
        (Direction::HostToDevice, [0x7F]) => Some("sync (autobaud)".into()),
        (Direction::HostToDevice, [cmd, inv]) if *cmd == !*inv => Some(
            match cmd {
                0x00 => "Get",
                0x01 => "Get Version",
                0x02 => "Get ID",
                0x11 => "Read Memory",
                0x21 => "Go",
                0x31 => "Write Memory",
                0x43 => "Erase",
                0x44 => "Extended Erase",
                0x63 => "Write Protect",
                0x73 => "Write Unprotect",
                0x82 => "Readout Protect",
                0x92 => "Readout Unprotect",
                0xA1 => "Get Checksum",
                _ => return None,
            }
            .into(),
        ),
        _ => None,
    }
}

/// CRC-32 (IEEE, as zlib computes it).
pub fn crc32(data: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(data)
}

impl BoardSession for RigSession {
    fn clock(&self) -> std::sync::Arc<dyn crate::backend::Clock> {
        self.backends.clock.clone()
    }

    fn begin_scenario(&mut self, _: &hil_config::Scenario) -> Result<(), String> {
        if let Some(s) = self.backends.serial.as_mut() {
            // A board still printing what the last scenario started would leave its tail here.
            if !s.clear_when_quiet(Duration::from_millis(30), Duration::from_millis(300)).map_err(|e| e.to_string())? {
                tracing::debug!("{}: console still busy after 300 ms; cleared anyway", s.name());
            }
        }
        self.transcript = Transcript::new();
        self.last_image = None;
        self.state = None;
        self.last_go = None;
        Ok(())
    }

    fn run_step(&mut self, step: &Step, cx: &StepCx) -> StepOutcome {
        match &step.action {
            Action::PowerCycle(p) => {
                let r = self.power_cycle(p.off.map(|d| d.std()).unwrap_or(Duration::from_millis(10)));
                self.state = None;
                self.last_go = None;
                outcome_from(r)
            }
            Action::Reset(r) => {
                self.state = None;
                self.last_go = None;
                outcome_from(self.reset(r.via))
            }
            Action::SetBoot0(level) => {
                let high = *level == PinLevel::High;
                let r = self.lines().and_then(|l| l.set_boot0(high).map_err(|e| e.to_string()));
                if r.is_ok() {
                    self.boot0_driven = Some(high);
                }
                outcome_from(r)
            }
            Action::WriteOptionBytes(w) => outcome_from(self.write_option_bytes(w, cx)),
            Action::Flash(f) => self.flash_step(f, cx),
            Action::Go(g) => {
                let addr = match self.resolve(&g.address.value) {
                    Ok(a) => a,
                    Err(e) => return StepOutcome::error(e),
                };
                let r = self.uart_session(cx, |c| {
                    c.connect()?;
                    Ok(c.go(addr)?)
                });
                self.state = None;
                self.last_go = Some(addr);
                outcome_from(r)
            }
            Action::Leave(l) => {
                let addr = match l.address.as_ref().map(|a| self.resolve(&a.value)).transpose() {
                    Ok(a) => a,
                    Err(e) => return StepOutcome::error(e),
                };
                let r = self.open_dfu().and_then(|mut d| d.leave(addr).map(|_| ()).map_err(|e| e.to_string()));
                self.state = None;
                self.last_go = addr.or(Some(self.application_base()));
                outcome_from(r)
            }
            Action::Send(s) => {
                let bytes = s.bytes.clone().unwrap_or_else(|| s.text.clone().unwrap_or_default().into_bytes());
                outcome_from(self.serial().and_then(|l| l.send(&bytes).map_err(|e| e.to_string())))
            }
            Action::Halt(_) => outcome_from(self.probe().and_then(|p| p.halt())),
            Action::Resume(_) => outcome_from(self.probe().and_then(|p| p.resume())),
            Action::ResetHalt(_) => outcome_from(self.probe().and_then(|p| p.reset_halt())),
            Action::Wait(d) => {
                // In slices on the board's clock, so that Ctrl-C does not sit out a long wait.
                let end = cx.clock().now().saturating_add(d.std().min(cx.remaining()));
                loop {
                    let left = end.saturating_sub(cx.clock().now());
                    if left.is_zero() {
                        break StepOutcome::passed();
                    }
                    if cx.cancel.is_cancelled() {
                        break StepOutcome::error("wait cut short");
                    }
                    cx.clock().sleep(left.min(Duration::from_millis(50)));
                }
            }
            Action::Enter(e) => crate::strategy::enter(self, e.state, e.via, cx),
            Action::ReadoutUnprotect(r) => outcome_from(
                match r.via {
                    Via::Uart => self.uart_session(cx, |c| {
                        c.connect()?;
                        Ok(c.readout_unprotect()?)
                    }),
                    Via::Dfu => self.open_dfu().and_then(|mut d| d.read_unprotect().map_err(|e| e.to_string())),
                    Via::Probe => Err("readout-unprotect goes through a bootloader".into()),
                }
                .and_then(|()| self.await_protection_removed(cx)),
            ),
            Action::ExpectBootloader(b) => self.expect_bootloader(b.via, b.pid.as_ref().map(|p| p.value.0), cx),
            Action::ExpectSerial(e) => {
                let (deadline, cancel) = (cx.deadline.clone(), cx.cancel.clone());
                match self.serial() {
                    Ok(link) => match link.expect(&e.contains, &deadline, &cancel) {
                        Ok(_) => StepOutcome::passed(),
                        Err(err) => {
                            let unread = link.unread();
                            let mut o = StepOutcome::failed(err.to_string());
                            if !unread.is_empty() {
                                o = o.with_evidence(Evidence::Text {
                                    label: "serial output meanwhile".into(),
                                    text: unread,
                                });
                            }
                            o
                        }
                    },
                    Err(err) => StepOutcome::error(err),
                }
            }
            Action::ExpectRegister(e) => self.expect_register(e),
            Action::ExpectMemory(m) => self.expect_memory(m),
            Action::ExpectUsb(u) => self.expect_usb(u.present, cx),
            Action::ExpectState(s) => crate::strategy::expect_state(self, *s, cx),
            Action::ExpectResetCause(f) => self.expect_reset_cause(*f),
        }
    }

    fn diagnose(&mut self, failed_step: &Step, outcome: &StepOutcome) -> Option<Diagnosis> {
        crate::diagnosis::diagnose(self, failed_step, outcome)
    }

    fn take_scenario_evidence(&mut self) -> Vec<Evidence> {
        let mut ev = Vec::new();
        if let Some(s) = self.backends.serial.as_mut() {
            // What the board sent since the last read is part of the story (nothing runs meanwhile).
            if let Err(e) = s.drain() {
                tracing::debug!("{}: reading the rest of the console: {e}", s.name());
            }
            let text = s.console_text();
            if !text.is_empty() {
                ev.push(Evidence::Text { label: format!("serial output ({})", s.name()), text });
            }
        }
        ev.extend(self.transcript_evidence());
        ev
    }

    fn close(&mut self) {
        self.probe = None;
        self.probe_factory = None;
        self.backends.serial = None;
        self.backends.keep_alive = None;
    }
}

/// Preflight an image for `board`: as its application (at the application base, clear of a
/// custom bootloader) or as its custom bootloader (inside `layout.bootloader`). Errors when the
/// board has no bootloader region to flash a bootloader into.
pub fn preflight_report(
    board: &Board,
    chip: &Chip,
    image: &hil_image::Image,
    what: FlashTarget,
) -> Result<hil_image::preflight::Report, String> {
    let bootloader = board
        .layout
        .bootloader
        .as_ref()
        .map(|r| hil_image::preflight::Region { base: r.value.base.0, size: r.value.size.0 });
    Ok(match what {
        FlashTarget::Application => hil_image::preflight::check(
            image,
            &hil_image::preflight::Target { chip, app_base: board.application_base(chip), bootloader },
        ),
        FlashTarget::Bootloader => {
            let region = bootloader.ok_or_else(|| {
                format!("`target: bootloader`: board `{}` has no layout.bootloader region", board.name.value)
            })?;
            hil_image::preflight::check_bootloader(image, chip, region)
        }
    })
}

/// How many sync attempts fit in `remaining`: each waits up to two reads (0x7F, then a second
/// 0x7F after silence). At least one, so a short step still tries.
fn sync_attempts_within(remaining: Duration, read: Duration, configured: u32) -> u32 {
    let per_attempt = (read * 2).max(Duration::from_millis(1));
    let fit = u32::try_from(remaining.as_millis() / per_attempt.as_millis()).unwrap_or(u32::MAX);
    configured.min(fit.max(1))
}

#[cfg(test)]
mod sync_budget_tests {
    use super::sync_attempts_within;
    use std::time::Duration;

    #[test]
    fn sync_attempts_never_outlast_the_step() {
        let ms = Duration::from_millis;
        assert_eq!(sync_attempts_within(ms(600), ms(500), 3), 1, "one attempt, even when it cannot fit");
        assert_eq!(sync_attempts_within(ms(50), ms(50), 3), 1);
        assert_eq!(sync_attempts_within(ms(2100), ms(500), 3), 2);
        assert_eq!(sync_attempts_within(ms(30_000), ms(500), 3), 3, "the configured count caps a long step");
    }
}
