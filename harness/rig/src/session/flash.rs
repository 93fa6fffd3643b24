//! Images, preflight, and flashing through AN3155, DfuSe or the probe.

use super::*;

/// An image the scenario flashed, kept for values (`image.base`, `symbol:NAME`) and comparisons.
#[derive(Clone, Debug)]
pub struct FlashedImage {
    pub name: String,
    pub image: hil_image::Image,
    /// The ELF file, when the image came from one (for symbols).
    pub elf: Option<Vec<u8>>,
    /// SHA-256 of the file as read (the ELF for fixtures), lowercase hex: traceability.
    pub sha256: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
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

impl RigSession {
    /// Load an image a step names: a fixture (built for this board's layout) or a file.
    pub fn load_image(
        &self,
        r: &ImageRef,
        bin_base: Option<u32>,
        scenario_file: &Path,
    ) -> Result<FlashedImage, StepError> {
        match r {
            ImageRef::Fixture { name, base } => {
                // A chip-specific build of the fixture first (fixtures.toml `variant_of`: the
                // STM32F103 build of `app`), then the fixture itself.
                let variant = match base {
                    Some(b) => hil_fixtures::variant_for(name, &self.chip.name, Some(*b)),
                    None => hil_fixtures::variant_for(name, &self.chip.name, Some(self.application_base()))
                        .or_else(|| hil_fixtures::variant_for(name, &self.chip.name, None)),
                };
                let fx = match base {
                    _ if variant.is_some() => variant,
                    Some(b) => hil_fixtures::get(name, *b),
                    None => hil_fixtures::all()
                        .iter()
                        .find(|f| f.name == name && f.base == self.application_base())
                        .or_else(|| hil_fixtures::default_of(name)),
                }
                .ok_or_else(|| {
                    StepError::unsupported(format!("fixture `{r}` is not built (see fixtures-firmware/fixtures.toml)"))
                })?;
                let image = hil_image::Image::from_elf(&format!("fixture:{}@{:#010x}", fx.name, fx.base), fx.elf)
                    .map_err(|e| StepError::unsupported(e.to_string()))?;
                Ok(FlashedImage { name: r.to_string(), image, elf: Some(fx.elf.to_vec()), sha256: sha256_hex(fx.elf) })
            }
            ImageRef::File(p) => {
                let path = hil_config::validate::resolve_relative(scenario_file, p);
                let image =
                    hil_image::Image::load(&path, bin_base).map_err(|e| StepError::unsupported(e.to_string()))?;
                let bytes = hil_image::read_image_file(&path).map_err(|e| StepError::unsupported(e.to_string()))?;
                let sha256 = sha256_hex(&bytes);
                let elf = bytes.starts_with(b"\x7fELF").then_some(bytes);
                Ok(FlashedImage { name: path.display().to_string(), image, elf, sha256 })
            }
        }
    }

    pub(super) fn preflight(&self, img: &FlashedImage, what: FlashTarget) -> Result<Vec<Evidence>, StepOutcome> {
        let report = preflight_report(&self.board, self.chip, &img.image, what)
            .map_err(|e| StepOutcome::error(e.to_string()))?;
        let text = report.to_string();
        if report.passed() {
            Ok(if text.is_empty() { vec![] } else { vec![Evidence::Text { label: "preflight warnings".into(), text }] })
        } else {
            let first = report.errors().next().map(|f| f.to_string()).unwrap_or_default();
            Err(StepOutcome::failed(format!("preflight refused {}: {first}", img.name))
                .with_evidence(Evidence::Text { label: "preflight".into(), text }))
        }
    }

    pub(super) fn flash_step(&mut self, f: &Flash, cx: &StepCx) -> StepOutcome {
        let img = match self.load_image(&f.image.value, f.base.map(|b| b.0), &cx.scenario_file) {
            Ok(i) => i,
            Err(e) => return outcome_of(e),
        };
        let mut evidence = match self.preflight(&img, f.target) {
            Ok(ev) => ev,
            Err(refused) => return refused,
        };
        let (clock, started) = (cx.clock().clone(), cx.clock().now());
        let bytes: u64 = img.image.segments.iter().map(|s| s.data.len() as u64).sum();
        if let Ok(mut seen) = self.seen.lock() {
            seen.note_image(hil_report::ImageRecord { name: img.name.clone(), sha256: img.sha256.clone(), bytes });
        }
        self.uart_stats = Default::default();
        self.dfu_stats = Default::default();
        let result = match f.via {
            Via::Probe => {
                let (name, elf) = (img.name.clone(), img.elf.clone());
                self.with_probe(|p| p.flash(&name, &img.image, elf.as_deref(), f.verify).map(|_| ()))
            }
            Via::Uart => self.flash_uart(&img, f.erase, f.verify, cx).map(|ev| evidence.extend(ev)),
            Via::Dfu => self.flash_dfu(&img, f.erase, f.verify, cx),
        };
        if f.via == Via::Uart {
            // What the link cost, pass or fail: a flash that passed on a noisy link says so.
            let s = self.uart_stats;
            for (label, value) in [
                ("AN3155 retries", s.retries),
                ("AN3155 resyncs", s.resyncs),
                ("AN3155 blocks confirmed by read-back", s.confirmed_by_read_back),
            ] {
                evidence.push(Evidence::Measurement { label: label.into(), value: value as f64, unit: String::new() });
            }
        }
        if f.via == Via::Dfu {
            let s = self.dfu_stats;
            for (label, value) in
                [("DfuSe retries", s.retries), ("DfuSe blocks confirmed by upload", s.confirmed_by_upload)]
            {
                evidence.push(Evidence::Measurement { label: label.into(), value: value as f64, unit: String::new() });
            }
        }
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
    pub(super) fn flash_uart(
        &mut self,
        img: &FlashedImage,
        erase: EraseMode,
        verify: bool,
        cx: &StepCx,
    ) -> Result<Vec<Evidence>, StepError> {
        let seen = self.seen.clone();
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
        let probe_available = self.backends.probe.is_some();
        let mut phases: Vec<(&'static str, f64)> = Vec::new();
        let r = self.uart_session(cx, |c| {
            crate::session::connect_noted(c, &seen)?;
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
                        return Err(StepError::expectation(format!(
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
                        return Err(StepError::expectation(format!(
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
                    return Err(StepError::expectation(format!(
                        "verify: flash at {:#010x} reads {:#04x} through the probe, the image has {:#04x}",
                        addr + i as u32,
                        back[i],
                        data[i]
                    )));
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

    pub(super) fn flash_dfu(
        &mut self,
        img: &FlashedImage,
        erase: EraseMode,
        verify: bool,
        cx: &StepCx,
    ) -> Result<(), StepError> {
        let mut dfu = self.open_dfu()?;
        // No transfer, poll or retry past the step's deadline (on the board's clock).
        dfu.set_deadline(Some(cx.deadline.clone()));
        // The caller's progress, lent to the client for the write and taken back after it.
        let progress = std::sync::Arc::new(std::sync::Mutex::new(self.progress.take()));
        let total: u64 = img.image.ranges().iter().map(|(_, d)| d.len() as u64).sum();
        {
            let progress = progress.clone();
            let mut done = 0u64;
            dfu.on_progress(move |n| {
                done += n;
                if let Ok(mut p) = progress.lock()
                    && let Some(p) = p.as_mut()
                {
                    p(done, total);
                }
            });
        }
        let r = Self::dfu_download(&mut dfu, img, erase, verify);
        // What the link cost, pass or fail (reported by the flash step).
        self.dfu_stats = dfu.stats();
        drop(dfu);
        self.progress = progress.lock().ok().and_then(|mut p| p.take());
        r
    }

    fn dfu_download(
        dfu: &mut hil_bootloader_host::dfu::DfuSeClient<Box<dyn hil_bootloader_host::dfu::ControlTransfer + Send>>,
        img: &FlashedImage,
        erase: EraseMode,
        verify: bool,
    ) -> Result<(), StepError> {
        let ranges = img.image.ranges();
        if erase == EraseMode::Mass {
            // Everything is erased: write only (no second erase of the touched pages).
            dfu.mass_erase()?;
            for (address, data) in &ranges {
                dfu.write(*address, data)?;
            }
        } else {
            dfu.download_ranges(&ranges)?;
        }
        if verify {
            for (addr, data) in &ranges {
                let back = dfu.upload(*addr, data.len())?;
                if let Some(i) = back.iter().zip(data.iter()).position(|(a, b)| a != b) {
                    return Err(StepError::expectation(format!(
                        "verify: flash at {:#010x} reads {:#04x}, the image has {:#04x}",
                        addr + i as u32,
                        back[i],
                        data[i]
                    )));
                }
                if back.len() < data.len() {
                    return Err(StepError::expectation(format!(
                        "verify: upload at {addr:#010x} returned {} of {} bytes",
                        back.len(),
                        data.len()
                    )));
                }
            }
        }
        Ok(())
    }

    pub(super) fn open_dfu(
        &mut self,
    ) -> Result<
        hil_bootloader_host::dfu::DfuSeClient<Box<dyn hil_bootloader_host::dfu::ControlTransfer + Send>>,
        StepError,
    > {
        let name = self.board.name.value.clone();
        let usb = self
            .backends
            .usb
            .as_mut()
            .ok_or_else(|| StepError::unsupported(format!("board `{name}` has no USB DFU connection")))?;
        let dev = usb.open()?;
        let mut client = hil_bootloader_host::dfu::DfuSeClient::open(
            dev,
            0,
            Default::default(),
            Some(Box::new(self.transcript.clone())),
        )?;
        client.set_transcript(Some(Box::new(self.transcript.clone())));
        Ok(client)
    }
}

/// A bootloader image aimed at a board whose layout has no bootloader region to take it.
#[derive(Debug, thiserror::Error)]
#[error("`target: bootloader`: board `{board}` has no layout.bootloader region")]
pub struct NoBootloaderRegion {
    pub board: String,
}

/// Preflight an image for `board`: as its application (at the application base, clear of a
/// custom bootloader) or as its custom bootloader (inside `layout.bootloader`). Errors when the
/// board has no bootloader region to flash a bootloader into.
pub fn preflight_report(
    board: &Board,
    chip: &Chip,
    image: &hil_image::Image,
    what: FlashTarget,
) -> Result<hil_image::preflight::Report, NoBootloaderRegion> {
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
            let region = bootloader.ok_or_else(|| NoBootloaderRegion { board: board.name.value.clone() })?;
            hil_image::preflight::check_bootloader(image, chip, region)
        }
    })
}
