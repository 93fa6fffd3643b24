//! The chip without its core: memory map, stores and peripheral models built from the chip
//! description, plus power-on and system reset of everything but the CPU (which `machine`
//! adds). Usable on its own, which is how the peripheral tests drive it.

use hil_chips::{Chip, PeripheralKind, PeripheralVersion, PinId};
use hil_cortex_m::{
    BusFaultKind, Device, DeviceCx, DeviceId, Initiator, RegionId, ResetCause, Size, StoreId, System, WritePolicy,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{BoardConfig, RamInit};
use crate::error::BoardError;
use crate::periph::dbgmcu::Dbgmcu;
use crate::periph::f1::dbgmcu::DbgmcuF1;
use crate::periph::f1::gpio::GpioF1;
use crate::periph::f1::rcc::RccF1;
use crate::periph::flash::{Flash, FlashStores};
use crate::periph::flash_f1::FlashF1;
use crate::periph::g4::rcc::RccG4;
use crate::periph::generic::Generic;
use crate::periph::gpio::Gpio;
use crate::periph::iwdg::Iwdg;
use crate::periph::rcc::Rcc;
use crate::periph::syscfg::{AliasTargets, Syscfg};
use crate::periph::usart::{Usart, UsartParams};
use crate::periph::usart_v1::UsartV1;
use crate::periph::usb::UsbDevice;
use crate::periph::wwdg::Wwdg;
use crate::shared::{BootInfo, Gate, Shared};
use crate::system_memory::{self, RomLayout};

/// Where things are in a built chip.
#[derive(Clone, Debug)]
pub struct Layout {
    pub flash_store: StoreId,
    pub system_store: StoreId,
    pub sram_store: StoreId,
    pub option_store: StoreId,
    pub otp_store: Option<StoreId>,
    pub engineering_store: Option<StoreId>,
    /// The boot alias at 0x00000000.
    pub alias: RegionId,
    pub flash: DeviceId,
    pub rcc: DeviceId,
    pub syscfg: DeviceId,
    pub dbgmcu: DeviceId,
    pub iwdg: Option<DeviceId>,
    pub wwdg: Option<DeviceId>,
    /// USART instances by name, in chip-file order (their index tags UART output).
    pub usarts: Vec<(String, DeviceId)>,
    pub gpios: Vec<(u8, DeviceId)>,
    /// Wakes the core from the ROM's idle loop.
    pub rom_wake: DeviceId,
    /// The USB device (on chips whose ROM has USB DFU).
    pub usb: Option<DeviceId>,
    pub rom: RomLayout,
    pub boot0: PinId,
    pub led: Option<PinId>,
}

/// Signals an event to the core when its timer falls due (the board schedules it to wake the
/// ROM's idle loop, like SEV from another bus master).
pub struct RomWake;

impl Device<Shared> for RomWake {
    fn name(&self) -> &str {
        "ROM-WAKE"
    }
    fn read(&mut self, _: u32, _: Size, _: Initiator, _: &mut DeviceCx<'_, Shared>) -> Result<u32, BusFaultKind> {
        Err(BusFaultKind::Unmapped)
    }
    fn write(
        &mut self,
        _: u32,
        _: Size,
        _: u32,
        _: Initiator,
        _: &mut DeviceCx<'_, Shared>,
    ) -> Result<(), BusFaultKind> {
        Err(BusFaultKind::Unmapped)
    }
    fn event(&mut self, _: u32, cx: &mut DeviceCx<'_, Shared>) {
        cx.signal_event();
    }
}

pub struct Soc {
    pub sys: System<Shared>,
    pub layout: Layout,
    pub chip: &'static Chip,
    ram_init: RamInit,
    ram_rng: ChaCha8Rng,
}

fn model_err(chip: &Chip, message: impl Into<String>) -> BoardError {
    BoardError::ChipModel { chip: chip.name.clone(), message: message.into() }
}

impl Soc {
    /// Build the chip named in `cfg` in its new-chip state: flash erased, factory option bytes.
    pub fn new(cfg: &BoardConfig) -> Result<Soc, BoardError> {
        let chip = Chip::by_name(&cfg.chip)
            .ok_or_else(|| BoardError::UnknownChip { name: cfg.chip.clone(), known: hil_chips::names().join(", ") })?;
        if !chip.virtual_board {
            return Err(model_err(chip, "the chip file marks it as data only (virtual_board: false)"));
        }
        let map_err = |source| BoardError::Map { chip: chip.name.clone(), source };
        let shared = Shared::new(chip, cfg.quirks.clone(), cfg.faults.clone())?;
        let hsi = shared.rcc.hsi16_hz;
        let mut sys = System::new(shared, hsi);
        let m = &chip.memory;
        let version_of = |kind| chip.peripherals_of(kind).next().and_then(|p| p.version);
        let flash_f1 = version_of(PeripheralKind::Flash) == Some(PeripheralVersion::FlashF1);

        // Stores (RM0444 3.3.1 Table 9/10): main flash erased, system memory with the hand-off
        // code, OTP erased, engineering bytes, option bytes with factory values.
        let flash_store = sys.memory.add_store("flash", m.flash.size as usize, 0xFF);
        let sram_store = sys.memory.add_store("sram", m.sram.size as usize, 0);
        let (rom_img, rom_layout) = system_memory::build_image(chip);
        let system_store = sys.memory.add_store("system memory", rom_img.len(), 0xFF);
        sys.memory.store_mut(system_store).copy_from_slice(&rom_img);
        let opt_len = m.option_bytes.size.next_multiple_of(hil_cortex_m::memory::PAGE_SIZE);
        let option_store = sys.memory.add_store("option bytes", opt_len as usize, 0xFF);
        let factory = factory_options(chip).ok_or_else(|| model_err(chip, "no option_bytes"))?;
        sys.memory.store_mut(option_store)[..m.option_bytes.size as usize].copy_from_slice(&factory);
        let otp_store = m.otp.as_ref().map(|a| sys.memory.add_store("otp", a.size as usize, 0xFF));
        let engineering_store = m.engineering_bytes.as_ref().map(|a| {
            let id = sys.memory.add_store("engineering bytes", a.size as usize, 0xFF);
            let data = sys.memory.store_mut(id);
            let mut put = |addr: u32, bytes: &[u8]| {
                if addr >= a.base && addr + bytes.len() as u32 <= a.base + a.size {
                    let o = (addr - a.base) as usize;
                    data[o..o + bytes.len()].copy_from_slice(bytes);
                }
            };
            // Flash size in KiB (RM0444 41.1), package code, and a unique ID derived from the
            // board's boards.yaml name (stable across runs, distinct between boards).
            put(m.flash_size_register, &((m.flash.size / 1024) as u16).to_le_bytes());
            if let (Some(pa), Some(code)) = (m.package_address, m.package_code) {
                put(pa, &code.to_le_bytes());
            }
            if let Some(ua) = m.uid_address {
                let source = if cfg.unique_id_source.is_empty() { &cfg.name } else { &cfg.unique_id_source };
                let h =
                    source.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3));
                let mut uid = [0u8; 12];
                uid[..8].copy_from_slice(&h.to_le_bytes());
                uid[8..].copy_from_slice(&(chip.identity.dev_id as u32).to_le_bytes());
                put(ua, &uid);
            }
            id
        });

        // Devices. FLASH first: its reset loads the option bytes that the other devices' resets
        // (IWDG hardware mode, SYSCFG boot mode) read.
        let stores = FlashStores { main: flash_store, otp: otp_store, options: option_store };
        let incomplete = || model_err(chip, "flash controller data incomplete");
        let flash_dev = if flash_f1 {
            let flash = FlashF1::new(chip, flash_store, option_store, cfg.flash_speed).ok_or_else(incomplete)?;
            sys.add_device(Box::new(flash))
        } else {
            let flash = Flash::new(chip, stores, cfg.flash_speed).ok_or_else(incomplete)?;
            sys.add_device(Box::new(flash))
        };
        let rcc_dev = match version_of(PeripheralKind::Rcc) {
            Some(PeripheralVersion::RccF1) => sys.add_device(Box::new(RccF1::new())),
            Some(PeripheralVersion::RccG4) => sys.add_device(Box::new(RccG4::new())),
            _ => sys.add_device(Box::new(Rcc::new())),
        };

        // Regions. The boot alias is created as large as the largest thing it can show, then
        // pointed at the boot target by SYSCFG's reset.
        let alias_len = m.flash.size.max(m.sram.size).max(m.system_memory.size);
        let alias = sys
            .memory
            .map_store("boot alias", 0, alias_len, flash_store, 0, WritePolicy::Device(flash_dev), true)
            .map_err(map_err)?;
        sys.memory
            .map_store("flash", m.flash.base, m.flash.size, flash_store, 0, WritePolicy::Device(flash_dev), true)
            .map_err(map_err)?;
        let rom_writes = if cfg.quirks.system_memory_writes_fault { WritePolicy::Fault } else { WritePolicy::Ignore };
        sys.memory
            .map_store("system memory", m.system_memory.base, m.system_memory.size, system_store, 0, rom_writes, true)
            .map_err(map_err)?;
        for (i, (base, img)) in system_memory::build_extra_images(chip).into_iter().enumerate() {
            let size = img.len() as u32;
            let store = sys.memory.add_store("system memory (more)", img.len(), 0xFF);
            sys.memory.store_mut(store).copy_from_slice(&img);
            sys.memory
                .map_store(
                    if i == 0 { "system memory 2" } else { "system memory n" },
                    base,
                    size,
                    store,
                    0,
                    rom_writes,
                    true,
                )
                .map_err(map_err)?;
        }
        if let (Some(a), Some(s)) = (&m.otp, otp_store) {
            sys.memory
                .map_store("otp", a.base, a.size, s, 0, WritePolicy::Device(flash_dev), false)
                .map_err(map_err)?;
        }
        if let (Some(a), Some(s)) = (&m.engineering_bytes, engineering_store) {
            sys.memory
                .map_store("engineering bytes", a.base, a.size, s, 0, WritePolicy::Fault, false)
                .map_err(map_err)?;
        }
        sys.memory
            .map_store(
                "option bytes",
                m.option_bytes.base,
                opt_len,
                option_store,
                0,
                WritePolicy::Device(flash_dev),
                false,
            )
            .map_err(map_err)?;
        sys.memory
            .map_store("sram", m.sram.base, m.sram.size, sram_store, 0, WritePolicy::Direct, true)
            .map_err(map_err)?;

        let gate_of = |g: &Option<hil_chips::ClockGate>, what: &str| -> Result<Option<Gate>, BoardError> {
            g.as_ref().map(|g| Gate::resolve(chip, g, what)).transpose()
        };
        let mut syscfg = None;
        let mut dbgmcu = None;
        let mut iwdg = None;
        let mut wwdg = None;
        let mut usarts = Vec::new();
        let mut gpios = Vec::new();
        let mut usb = None;
        let remap = chip.remap.clone();
        let flash_writes = WritePolicy::Device(flash_dev);
        let alias_targets = AliasTargets {
            region: alias,
            main: (flash_store, m.flash.size, flash_writes),
            system: (system_store, m.system_memory.size, rom_writes),
            sram: (sram_store, m.sram.size, WritePolicy::Direct),
        };
        for p in &chip.peripherals {
            let gate = gate_of(&p.clock, &p.name)?;
            let dev = match p.kind {
                PeripheralKind::Flash => flash_dev,
                PeripheralKind::Rcc => rcc_dev,
                PeripheralKind::Syscfg => {
                    let r = remap.clone().ok_or_else(|| model_err(chip, "a syscfg peripheral without `remap`"))?;
                    let g = Some(Gate::resolve(chip, &r.clock, "remap.clock")?);
                    let d = sys.add_device(Box::new(Syscfg::new(Some(r), g, alias_targets)));
                    syscfg = Some(d);
                    d
                }
                PeripheralKind::Dbgmcu if p.version == Some(PeripheralVersion::DbgmcuF1) => {
                    let d = sys.add_device(Box::new(DbgmcuF1::new(chip.identity.dev_id, chip.identity.rev_id)));
                    dbgmcu = Some(d);
                    d
                }
                PeripheralKind::Dbgmcu => {
                    let d = sys.add_device(Box::new(Dbgmcu::new(chip.identity.dev_id, chip.identity.rev_id, gate)));
                    dbgmcu = Some(d);
                    d
                }
                PeripheralKind::Iwdg => {
                    let lsi = chip.clocks.as_ref().map_or(32_000, |c| c.lsi_hz);
                    let d = sys.add_device(Box::new(Iwdg::new(lsi)));
                    iwdg = Some(d);
                    d
                }
                PeripheralKind::Wwdg => {
                    let d = sys.add_device(Box::new(Wwdg::new(gate, p.irq)));
                    wwdg = Some(d);
                    d
                }
                PeripheralKind::Usart => {
                    let params = UsartParams {
                        name: p.name.clone(),
                        index: usarts.len(),
                        irq: p.irq,
                        gate,
                        reset: gate_of(&p.reset, &p.name)?,
                        kernel_select: p.kernel_clock_select,
                    };
                    let d = match p.version {
                        Some(PeripheralVersion::UsartV1) => sys.add_device(Box::new(UsartV1::new(params))),
                        _ => sys.add_device(Box::new(Usart::new(params))),
                    };
                    usarts.push((p.name.clone(), d));
                    d
                }
                PeripheralKind::Gpio => {
                    let port = p
                        .name
                        .strip_prefix("GPIO")
                        .and_then(|s| s.bytes().next())
                        .filter(|c| c.is_ascii_uppercase())
                        .map(|c| c - b'A')
                        .ok_or_else(|| model_err(chip, format!("GPIO peripheral {} has no port letter", p.name)))?;
                    let d = match p.version {
                        Some(PeripheralVersion::GpioF1) => sys.add_device(Box::new(GpioF1::new(&p.name, port, gate))),
                        _ => sys.add_device(Box::new(Gpio::new(&p.name, port, gate))),
                    };
                    gpios.push((port, d));
                    d
                }
                // The chip data has no `usb` peripheral kind yet: the USB block of a part whose ROM
                // has USB DFU is modelled by name (AN2606: the G0B1 ROM offers DFU on it).
                PeripheralKind::Generic if p.name == "USB" && chip.bootloader.usb_dfu => {
                    let irq = p.irq.ok_or_else(|| model_err(chip, "the USB peripheral has no IRQ line"))?;
                    let d = sys.add_device(Box::new(UsbDevice::new(irq, gate)));
                    usb = Some(d);
                    d
                }
                PeripheralKind::Generic => sys.add_device(Box::new(Generic::new(&p.name, p.size, gate))),
            };
            sys.memory.map_device(&p.name, p.base, p.size, dev).map_err(map_err)?;
        }
        // No remap register (F1): the alias follows the boot pins at each reset (RM0008 3.4); the
        // SYSCFG model without `remap` does that, unmapped.
        let syscfg = match syscfg {
            Some(d) => Some(d),
            None if remap.is_none() => Some(sys.add_device(Box::new(Syscfg::new(None, None, alias_targets)))),
            None => None,
        };
        let rom_wake = sys.add_device(Box::new(RomWake));
        let boot = chip.boot.as_ref().ok_or_else(|| model_err(chip, "no boot section"))?;
        let layout = Layout {
            flash_store,
            system_store,
            sram_store,
            option_store,
            otp_store,
            engineering_store,
            alias,
            flash: flash_dev,
            rcc: rcc_dev,
            syscfg: syscfg.ok_or_else(|| model_err(chip, "no SYSCFG peripheral"))?,
            dbgmcu: dbgmcu.ok_or_else(|| model_err(chip, "no DBGMCU peripheral"))?,
            iwdg,
            wwdg,
            usarts,
            gpios,
            rom_wake,
            usb,
            rom: rom_layout,
            boot0: PinId::parse(&boot.boot0_pin).ok_or_else(|| model_err(chip, "bad boot0_pin"))?,
            led: chip.pins.as_ref().and_then(|p| p.led.as_ref()).and_then(|l| PinId::parse(&l.pin)),
        };
        let seed = match cfg.ram_init {
            RamInit::Random { seed } => seed,
            RamInit::Zero => 0,
        };
        let mut soc = Soc { sys, layout, chip, ram_init: cfg.ram_init, ram_rng: ChaCha8Rng::seed_from_u64(seed) };
        soc.set_boot0(cfg.boot0);
        Ok(soc)
    }

    /// Power-on reset of the chip (not the core): SRAM content is lost (zero or random per
    /// configuration), option bytes are loaded, the empty check runs, reset flags = PWR|PIN.
    pub fn power_on(&mut self, cycle: u64) -> BootInfo {
        let sram = self.layout.sram_store;
        match self.ram_init {
            RamInit::Zero => self.sys.memory.store_mut(sram).fill(0),
            RamInit::Random { .. } => self.ram_rng.fill_bytes(self.sys.memory.store_mut(sram)),
        }
        self.reset(ResetCause::PowerOn, cycle)
    }

    /// System reset of every peripheral with `cause` (SRAM survives); returns the boot selection
    /// made (option bytes reloaded for POR and OBL only).
    pub fn reset(&mut self, cause: ResetCause, cycle: u64) -> BootInfo {
        self.sys.shared.reset_cause = cause;
        self.sys.reset_devices(cause, cycle);
        // Pending reset requests that caused this reset are consumed.
        let _ = hil_cortex_m::Bus::take_attention(&mut self.sys);
        self.sys.shared.boot.clone().unwrap_or_else(|| crate::boot::select(&self.sys.shared))
    }

    /// The boot selection of the last reset.
    pub fn boot(&self) -> Option<&BootInfo> {
        self.sys.shared.boot.as_ref()
    }

    /// Drive BOOT0 (the board's jumper or control line). Latched at the next reset.
    pub fn set_boot0(&mut self, level: bool) {
        let pin = self.layout.boot0;
        self.sys.shared.pins.drive(pin, Some(level));
    }

    /// Drive a pin from outside (`None` releases it).
    pub fn drive_pin(&mut self, pin: PinId, level: Option<bool>) {
        self.sys.shared.pins.drive(pin, level);
    }

    /// The G0 flash controller (`None` on parts with another version).
    pub fn flash(&self) -> Option<&Flash> {
        self.sys.device::<Flash>(self.layout.flash)
    }
    /// The F1 flash controller (`None` on parts with another version).
    pub fn flash_f1(&self) -> Option<&FlashF1> {
        self.sys.device::<FlashF1>(self.layout.flash)
    }
    /// The G0 RCC (`None` on parts with another version).
    pub fn rcc(&self) -> Option<&Rcc> {
        self.sys.device::<Rcc>(self.layout.rcc)
    }
    pub fn syscfg(&self) -> &Syscfg {
        self.sys.device::<Syscfg>(self.layout.syscfg).expect("layout names the SYSCFG model")
    }
    pub fn usart(&self, name: &str) -> Option<&Usart> {
        let (_, id) = self.layout.usarts.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        self.sys.device::<Usart>(*id)
    }
    /// The F1 USART `name`.
    pub fn usart_v1(&self, name: &str) -> Option<&UsartV1> {
        let (_, id) = self.layout.usarts.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        self.sys.device::<UsartV1>(*id)
    }
    pub fn usart_index(&self, name: &str) -> Option<usize> {
        self.layout.usarts.iter().position(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// RCC_CSR as software reads it.
    pub fn rcc_csr(&self) -> u32 {
        let shared = &self.sys.shared;
        if let Some(r) = self.rcc() {
            r.csr(shared)
        } else if let Some(r) = self.sys.device::<RccF1>(self.layout.rcc) {
            r.csr(shared)
        } else if let Some(r) = self.sys.device::<RccG4>(self.layout.rcc) {
            r.csr(shared)
        } else {
            shared.rcc.csr_flags
        }
    }

    /// Write bytes into main flash or OTP directly (a programmer's view: no controller timing,
    /// no protection). Refuses anything outside those areas.
    pub fn load_flash(&mut self, addr: u32, bytes: &[u8]) -> Result<(), BoardError> {
        let m = &self.chip.memory;
        let (store, base, size) = if m.flash.area().contains_range(addr, bytes.len() as u64) {
            (self.layout.flash_store, m.flash.base, m.flash.size)
        } else if let (Some(a), Some(s)) = (&m.otp, self.layout.otp_store)
            && a.contains_range(addr, bytes.len() as u64)
        {
            (s, a.base, a.size)
        } else {
            return Err(BoardError::Image(format!(
                "{} bytes at {addr:#010x} do not fit the flash of {} ({:#010x}..{:#010x})",
                bytes.len(),
                self.chip.name,
                m.flash.base,
                m.flash.base as u64 + m.flash.size as u64
            )));
        };
        let off = (addr - base) as usize;
        debug_assert!(off + bytes.len() <= size as usize);
        self.sys.memory.store_mut(store)[off..off + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    /// Back to the new-chip state: flash and OTP erased, factory option bytes (takes effect at
    /// the next power-on or option byte loading, like a chip fresh from the reel).
    pub fn factory_reset(&mut self) {
        self.sys.memory.store_mut(self.layout.flash_store).fill(0xFF);
        if let Some(s) = self.layout.otp_store {
            self.sys.memory.store_mut(s).fill(0xFF);
        }
        if let Some(img) = factory_options(self.chip) {
            let size = self.chip.memory.option_bytes.size;
            let store = self.sys.memory.store_mut(self.layout.option_store);
            store.fill(0xFF);
            store[..size as usize].copy_from_slice(&img);
        }
    }

    /// Raw option area bytes (word and complement pairs).
    pub fn option_bytes(&self) -> Vec<u8> {
        self.sys.memory.store(self.layout.option_store)[..self.chip.memory.option_bytes.size as usize].to_vec()
    }

    /// Write raw option area bytes (takes effect at the next POR or OBL).
    pub fn set_option_bytes(&mut self, offset: u32, bytes: &[u8]) -> Result<(), BoardError> {
        let size = self.chip.memory.option_bytes.size as usize;
        let off = offset as usize;
        if off + bytes.len() > size {
            return Err(BoardError::Image(format!(
                "{} option bytes at +{offset:#x} exceed the {size:#x}-byte option area",
                bytes.len()
            )));
        }
        self.sys.memory.store_mut(self.layout.option_store)[off..off + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    /// Program an option word and its complement into the option area (effective at the next
    /// POR or OBL), by chip-data word name.
    pub fn set_option_word(&mut self, name: &str, value: u32) -> Result<(), BoardError> {
        let ob = self.chip.option_bytes.as_ref().ok_or_else(|| model_err(self.chip, "no option bytes"))?;
        let w = ob.word(name).ok_or_else(|| BoardError::Image(format!("no option word {name:?}")))?;
        let (off, comp) = (w.offset, ob.complement_offset);
        self.set_option_bytes(off, &value.to_le_bytes())?;
        self.set_option_bytes(off + comp, &(!value).to_le_bytes())
    }
}

/// The option area as ST ships it: from the chip data's layout, or the F1 controller's fixed
/// byte / complement layout (PM0075 2.5).
fn factory_options(chip: &Chip) -> Option<Vec<u8>> {
    let size = chip.memory.option_bytes.size;
    match chip.option_bytes.as_ref() {
        Some(ob) => Some(ob.factory_image(size)),
        None if chip.peripherals_of(PeripheralKind::Flash).any(|p| p.version == Some(PeripheralVersion::FlashF1)) => {
            Some(crate::periph::flash_f1::factory_image(size))
        }
        None => None,
    }
}

#[cfg(test)]
mod tests;
