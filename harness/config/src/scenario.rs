//! Scenario files: metadata, requirements and ordered steps. A step is one action or expectation
//! plus optional `timeout` and `name`:
//!
//! ```yaml
//! - flash: { image: "fixture:app", via: uart }
//!   timeout: 30s
//! - expect-serial: { contains: "app ready" }
//! - halt          # a step without arguments may be written as a plain string
//! ```

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::boards::{Capability, PinLevel};
use crate::values::{Address, ByteSize, Duration, Located};

/// One scenario file.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scenario {
    /// Unique across all scenario files.
    pub name: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Capabilities needed beyond what the steps imply (the steps' own needs are added).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Located<Capability>>,
    /// Run only on these boards (default: every selected board that has the capabilities).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boards: Vec<Located<String>>,
    /// Default deadline of each step (a step's own `timeout` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// What the run must show: pass (default), or a failure with a named cause (conformance
    /// scenarios that run deliberately broken firmware).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Located<ExpectedOutcome>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The failure class this scenario checks: a row of the conformance matrix in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub steps: Vec<Located<Step>>,
    /// Steps that run after `steps` whatever happened (restore option bytes, release BOOT0), so
    /// the next scenario starts from a known board. A failing cleanup makes the scenario an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanup: Vec<Located<Step>>,
}

impl Scenario {
    /// Steps, then cleanup steps.
    pub fn all_steps(&self) -> impl Iterator<Item = &Located<Step>> {
        self.steps.iter().chain(self.cleanup.iter())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExpectedOutcome {
    pub outcome: Outcome,
    /// The diagnosis cause the failure must be attributed to (required for `fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Located<String>>,
    /// With `pass`: a mistake this board tolerates (the firmware makes it, the flow still works
    /// here). `hil run --audit-diagnosis` diagnoses passing scenarios and requires this cause to be
    /// named; on other passing scenarios it requires that no cause is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent: Option<Located<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Pass,
    Fail,
}

/// One step: an action or an expectation, with an optional deadline and label.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub action: Action,
    pub timeout: Option<Duration>,
    pub name: Option<String>,
}

/// A firmware image: `fixture:NAME[@BASE]` (built from fixtures-firmware/) or a file path
/// (ELF, .hex or .bin; relative to the scenario file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    Fixture { name: String, base: Option<u32> },
    File(PathBuf),
}

impl std::str::FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("fixture:") {
            let (name, base) = match rest.split_once('@') {
                Some((n, b)) => (n, Some(crate::values::parse_u32(b, "fixture base")?)),
                None => (rest, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("bad fixture name `{name}` in `{s}`"));
            }
            Ok(ImageRef::Fixture { name: name.to_string(), base })
        } else if s.trim().is_empty() {
            Err("empty image reference".into())
        } else {
            Ok(ImageRef::File(PathBuf::from(s)))
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Fixture { name, base: Some(b) } => write!(f, "fixture:{name}@{b:#010x}"),
            ImageRef::Fixture { name, base: None } => write!(f, "fixture:{name}"),
            ImageRef::File(p) => write!(f, "{}", p.display()),
        }
    }
}

macro_rules! string_form {
    ($ty:ty, $name:literal, $desc:literal, $pattern:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "description": $desc, "type": "string", "pattern": $pattern })
            }
        }
    };
}

string_form!(
    ImageRef,
    "ImageRef",
    "fixture:NAME[@BASE] for a fixture built from fixtures-firmware/, or a path to an ELF, .hex or .bin file relative to the scenario file.",
    "^.+$"
);

/// A value known when the step runs: a literal, a named value, or an ELF symbol of the image
/// flashed last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueRef {
    Literal(u32),
    Named(NamedValue),
    /// `symbol:NAME`: address of a symbol in the ELF flashed last.
    Symbol(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamedValue {
    /// The board's application base (layout.application-base).
    ApplicationBase,
    /// Word 0 of the vector table at the application base.
    ApplicationInitialSp,
    /// Word 1 of the vector table at the application base (Thumb bit cleared).
    ApplicationResetHandler,
    /// Vector table of the image flashed last.
    ImageBase,
    ImageInitialSp,
    ImageResetHandler,
    /// The ROM bootloader's vector table (the address an application jumps to).
    SystemMemoryBase,
    /// Where VTOR points after the robust entry into the ROM: 0x00000000 on parts that remap
    /// system memory to the boot alias (chip data `remap`, STM32G0), the system memory address
    /// itself on parts without a remap register (STM32F1, RM0008 3.4).
    SystemMemoryVectorTable,
}

impl NamedValue {
    pub const ALL: [(&'static str, NamedValue); 8] = [
        ("application.base", NamedValue::ApplicationBase),
        ("application.initial-sp", NamedValue::ApplicationInitialSp),
        ("application.reset-handler", NamedValue::ApplicationResetHandler),
        ("image.base", NamedValue::ImageBase),
        ("image.initial-sp", NamedValue::ImageInitialSp),
        ("image.reset-handler", NamedValue::ImageResetHandler),
        ("system-memory.base", NamedValue::SystemMemoryBase),
        ("system-memory.vector-table", NamedValue::SystemMemoryVectorTable),
    ];
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, v)| *v == self).map(|(n, _)| *n).unwrap_or("?")
    }
}

impl std::str::FromStr for ValueRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.starts_with(|c: char| c.is_ascii_digit()) {
            return crate::values::parse_u32(t, "value").map(ValueRef::Literal);
        }
        if let Some(sym) = t.strip_prefix("symbol:") {
            if sym.is_empty() {
                return Err("empty symbol name in `symbol:`".into());
            }
            return Ok(ValueRef::Symbol(sym.to_string()));
        }
        NamedValue::ALL.iter().find(|(n, _)| *n == t).map(|(_, v)| ValueRef::Named(*v)).ok_or_else(|| {
            let names: Vec<_> = NamedValue::ALL.iter().map(|(n, _)| *n).collect();
            format!("unknown value `{t}`: expected a number, `symbol:NAME`, or one of {}", names.join(", "))
        })
    }
}

impl fmt::Display for ValueRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueRef::Literal(v) => write!(f, "{v:#010x}"),
            ValueRef::Named(n) => f.write_str(n.name()),
            ValueRef::Symbol(s) => write!(f, "symbol:{s}"),
        }
    }
}

impl<'de> Deserialize<'de> for ValueRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ValueRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, `symbol:NAME`, or a named value such as application.base")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ValueRef, E> {
                u32::try_from(v)
                    .map(ValueRef::Literal)
                    .map_err(|_| E::custom(format!("bad value {v:#x}: does not fit in 32 bits")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ValueRef, E> {
                u32::try_from(v)
                    .map(ValueRef::Literal)
                    .map_err(|_| E::custom(format!("bad value {v}: must be 0..=0xFFFF_FFFF")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ValueRef, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ValueRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl JsonSchema for ValueRef {
    fn schema_name() -> Cow<'static, str> {
        "ValueRef".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = NamedValue::ALL.iter().map(|(n, _)| *n).collect();
        json_schema!({
            "description": "A number, `symbol:NAME` (a symbol of the ELF flashed last), or a named value.",
            "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": 4294967295u32 },
                { "type": "string", "pattern": "^(0[xX][0-9a-fA-F_]+|[0-9_]+|symbol:.+)$" },
                { "type": "string", "enum": names }
            ]
        })
    }
}

/// A named memory region or an explicit range.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RegionRef {
    Named(NamedRegion),
    Range { base: Address, size: ByteSize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NamedRegion {
    /// From the board's application base to the end of flash.
    Application,
    /// The ROM holding ST's system bootloader.
    SystemMemory,
    /// A custom bootloader region from the board's layout.
    Bootloader,
    Flash,
    Sram,
    /// The extent of the image flashed last.
    Image,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Register {
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
    R11,
    R12,
    Sp,
    Lr,
    Pc,
    Xpsr,
    Msp,
    Psp,
    Primask,
    Control,
    /// Exception number in IPSR (0 in thread mode).
    Ipsr,
    /// SCB->VTOR.
    Vtor,
}

/// Where flashing / erasing goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[derive(Default)]
pub enum Via {
    #[default]
    Probe,
    Uart,
    Dfu,
}

impl Via {
    pub fn capability(self) -> Capability {
        match self {
            Via::Probe => Capability::Probe,
            Via::Uart => Capability::Uart,
            Via::Dfu => Capability::Usb,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ResetVia {
    /// Pulse the NRST pin.
    #[default]
    Nrst,
    /// AIRCR.SYSRESETREQ through the debug probe.
    Probe,
    /// Power cycle.
    Power,
}

/// States the strategy layer knows how to reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BoardState {
    Off,
    Application,
    SystemBootloader,
    CustomBootloader,
    Halted,
}

/// How to get into a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Transition {
    /// BOOT0 pin high + reset.
    Boot0Pin,
    /// Option bits that select the ROM + option byte reload.
    OptionBits,
    /// The application's own jump request (a command on its UART).
    Jump,
    /// NRST pulse with BOOT0 low.
    Reset,
    PowerCycle,
    /// AN3155 Go to the application.
    Go,
    /// DfuSe leave to the application.
    Leave,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ResetFlag {
    PowerOn,
    Pin,
    Software,
    IndependentWatchdog,
    WindowWatchdog,
    OptionByteLoad,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EraseMode {
    /// Only the pages the image touches.
    #[default]
    Touched,
    Mass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FlashTarget {
    #[default]
    Application,
    /// The custom bootloader of a board whose `layout` has a `bootloader` region.
    Bootloader,
}

// ---- step arguments ----

#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PowerCycle {
    /// How long power stays off (default 10ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Reset {
    #[serde(default)]
    pub via: ResetVia,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Flash {
    pub image: Located<ImageRef>,
    pub via: Via,
    /// Read back (or checksum) after writing.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Load address of a raw .bin image (ignored for ELF/HEX, which carry addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Address>,
    #[serde(default)]
    pub erase: EraseMode,
    /// What the image is: the application (checked against the board's application base and
    /// kept out of its bootloader region) or the board's custom bootloader (checked against the
    /// bootloader region of the board's layout).
    #[serde(default, skip_serializing_if = "is_default")]
    pub target: FlashTarget,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Go {
    /// Vector table to start (AN3155 Go: MSP = [address], PC = [address + 4]).
    #[serde(default = "application_base")]
    pub address: Located<ValueRef>,
}

fn application_base() -> Located<ValueRef> {
    Located::new(ValueRef::Named(NamedValue::ApplicationBase))
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Leave {
    /// Set the DfuSe address pointer first (default: leave to wherever it points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Located<ValueRef>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Send {
    /// Text to send (UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Raw bytes to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Enter {
    pub state: BoardState,
    /// How to get there (default: whatever this board can do, in the strategy's order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Transition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WriteOptionBytes {
    #[serde(default = "probe_via")]
    pub via: Via,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nboot0: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nboot1: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nboot_sel: Option<bool>,
    /// Readout protection level (2 is irreversible: only on boards with allow-rdp-level2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdp: Option<Located<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_watchdog: Option<bool>,
    /// Reload option bytes (OBL_LAUNCH) afterwards, which resets the chip.
    #[serde(default = "yes")]
    pub launch: bool,
}

fn probe_via() -> Via {
    Via::Probe
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReadoutUnprotect {
    #[serde(default = "uart_via")]
    pub via: Via,
}

fn uart_via() -> Via {
    Via::Uart
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExpectBootloader {
    /// Which interface must answer (uart: sync + Get; dfu: the DFU device enumerates and answers).
    #[serde(default = "uart_via")]
    pub via: Via,
    /// Product ID the bootloader must report (default: the chip's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<Located<Address>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExpectSerial {
    /// Text that must appear on the serial link (output since the previous serial expectation).
    pub contains: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExpectRegister {
    pub register: Register,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Located<ValueRef>>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub within: Option<Located<RegionRef>>,
    /// Compare only these bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Address>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExpectMemory {
    pub address: Located<ValueRef>,
    pub length: ByteSize,
    /// CRC-32 (IEEE, as zlib) of the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<Address>,
    /// The exact bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Vec<u8>>,
    /// All bytes 0xFF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased: Option<bool>,
    /// The same bytes as the image flashed last has at these addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches_image: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExpectUsb {
    /// Whether the ROM's DFU device must be present (true) or gone (false).
    #[serde(default = "yes")]
    pub present: bool,
}

macro_rules! actions {
    ($( $(#[$doc:meta])* $key:literal => $variant:ident($args:ty) ),* $(,)?) => {
        /// What a step does.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Action {
            $( $(#[$doc])* $variant($args), )*
        }

        impl Action {
            /// Every step keyword, in documentation order.
            pub const KEYWORDS: &'static [&'static str] = &[$($key),*];

            /// The YAML key of this step.
            pub fn keyword(&self) -> &'static str {
                match self { $( Action::$variant(_) => $key, )* }
            }

            fn from_map<'de, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Action, A::Error> {
                match key {
                    $( $key => Ok(Action::$variant(map.next_value()?)), )*
                    other => Err(de::Error::custom(unknown_step(other))),
                }
            }

            fn from_bare<E: de::Error>(key: &str) -> Result<Action, E> {
                let empty = de::value::MapDeserializer::<std::iter::Empty<(String, String)>, E>::new(std::iter::empty());
                match key {
                    $( $key => <$args>::deserialize(empty).map(Action::$variant).map_err(|e| {
                        E::custom(format!("step `{key}` needs arguments: {e}"))
                    }), )*
                    other => Err(E::custom(unknown_step(other))),
                }
            }

            fn serialize_args<S: serde::ser::SerializeMap>(&self, map: &mut S) -> Result<(), S::Error> {
                match self { $( Action::$variant(a) => map.serialize_entry($key, a), )* }
            }

            fn variant_schemas(generator: &mut SchemaGenerator) -> Vec<(&'static str, Schema)> {
                vec![$( ($key, generator.subschema_for::<$args>()), )*]
            }
        }
    };
}

actions! {
    /// Power off, wait, power on (a POR: RAM is lost, option bytes reload).
    "power-cycle" => PowerCycle(PowerCycle),
    /// Reset through NRST (default), the probe (SYSRESETREQ) or power.
    "reset" => Reset(Reset),
    /// Drive the BOOT0 pin.
    "set-boot0" => SetBoot0(PinLevel),
    /// Program boot-related option bits (and RDP), then reload them.
    "write-option-bytes" => WriteOptionBytes(WriteOptionBytes),
    /// Write an image through the probe, the UART bootloader or DFU; verify by default.
    "flash" => Flash(Flash),
    /// AN3155 Go: the ROM loads MSP from [address] and jumps to [address + 4].
    "go" => Go(Go),
    /// DfuSe leave: zero-length DNLOAD + GETSTATUS, the ROM jumps to the address pointer.
    "leave" => Leave(Leave),
    /// Send bytes to the board's UART (the application's command protocol).
    "send" => Send(Send),
    /// Halt the core through the probe.
    "halt" => Halt(NoArgs),
    /// Let the core run again.
    "resume" => Resume(NoArgs),
    /// Reset with vector catch: the core stops on the first instruction of the reset handler.
    "reset-halt" => ResetHalt(NoArgs),
    /// Let time pass.
    "wait" => Wait(Duration),
    /// Bring the board into a state, the strategy choosing how (or `via`).
    "enter" => Enter(Enter),
    /// Remove readout protection (mass erase + reset).
    "readout-unprotect" => ReadoutUnprotect(ReadoutUnprotect),
    /// The bootloader answers on an interface.
    "expect-bootloader" => ExpectBootloader(ExpectBootloader),
    /// Text appears on the serial link.
    "expect-serial" => ExpectSerial(ExpectSerial),
    /// A core register (read through the probe; the core is halted for the read).
    "expect-register" => ExpectRegister(ExpectRegister),
    /// Memory content (CRC, bytes, erased, or equal to the image flashed last).
    "expect-memory" => ExpectMemory(ExpectMemory),
    /// The ROM's DFU device is present (or gone).
    "expect-usb" => ExpectUsb(ExpectUsb),
    /// The strategy recognises this state.
    "expect-state" => ExpectState(BoardState),
    /// The reset flags (RCC_CSR on STM32) show this cause for the last reset.
    "expect-reset-cause" => ExpectResetCause(ResetFlag),
}

fn unknown_step(key: &str) -> String {
    let close =
        Action::KEYWORDS.iter().min_by_key(|k| strsim_distance(k, key)).filter(|k| strsim_distance(k, key) <= 3);
    match close {
        Some(k) => format!("unknown step `{key}` (did you mean `{k}`?)"),
        None => format!("unknown step `{key}`, expected one of: {}", Action::KEYWORDS.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn strsim_distance(a: &str, b: &str) -> usize {
    strsim::levenshtein(a, b)
}

impl Action {
    /// Whether this step checks something (as opposed to doing something).
    pub fn is_expectation(&self) -> bool {
        self.keyword().starts_with("expect-")
    }

    /// Board capabilities this step needs.
    pub fn needs(&self) -> BTreeSet<Capability> {
        use Capability as C;
        let set = |c: &[Capability]| c.iter().copied().collect::<BTreeSet<_>>();
        match self {
            Action::PowerCycle(_) => set(&[C::Power]),
            Action::Reset(r) => match r.via {
                ResetVia::Nrst => set(&[C::Nrst]),
                ResetVia::Probe => set(&[C::Probe]),
                ResetVia::Power => set(&[C::Power]),
            },
            Action::SetBoot0(_) => set(&[C::Boot0]),
            Action::WriteOptionBytes(w) => set(&[w.via.capability(), C::OptionBytes]),
            Action::Flash(f) => set(&[f.via.capability()]),
            Action::Go(_) => set(&[C::Uart]),
            Action::Leave(_) => set(&[C::Usb]),
            Action::Send(_) => set(&[C::Uart]),
            Action::Halt(_) | Action::Resume(_) | Action::ResetHalt(_) => set(&[C::Probe]),
            Action::Wait(_) => set(&[]),
            Action::Enter(e) => match e.via {
                Some(Transition::Boot0Pin) => set(&[C::Boot0, C::Nrst]),
                Some(Transition::OptionBits) => set(&[C::Probe, C::OptionBytes]),
                Some(Transition::Jump) => set(&[C::Uart]),
                Some(Transition::Reset) => set(&[C::Nrst]),
                Some(Transition::PowerCycle) => set(&[C::Power]),
                Some(Transition::Go) => set(&[C::Uart]),
                Some(Transition::Leave) => set(&[C::Usb]),
                None => set(&[]),
            },
            Action::ReadoutUnprotect(r) => set(&[r.via.capability()]),
            Action::ExpectBootloader(b) => set(&[b.via.capability()]),
            Action::ExpectSerial(_) => set(&[C::Uart]),
            Action::ExpectRegister(_) | Action::ExpectMemory(_) | Action::ExpectResetCause(_) => set(&[C::Probe]),
            Action::ExpectUsb(_) => set(&[C::Usb]),
            Action::ExpectState(_) => set(&[]),
        }
    }

    /// A one-line description for reports ("flash fixture:app via uart").
    pub fn summary(&self) -> String {
        match self {
            Action::Flash(f) => format!("flash {} via {}", f.image.value, via_name(f.via)),
            Action::Go(g) => format!("go {}", g.address.value),
            Action::Leave(l) => match &l.address {
                Some(a) => format!("leave to {}", a.value),
                None => "leave".into(),
            },
            Action::Reset(r) => format!("reset via {:?}", r.via).to_lowercase(),
            Action::SetBoot0(l) => format!("set-boot0 {}", if *l == PinLevel::High { "high" } else { "low" }),
            Action::Wait(d) => format!("wait {d}"),
            Action::Enter(e) => format!("enter {:?}", e.state).to_lowercase(),
            Action::ExpectSerial(s) => format!("expect-serial {:?}", s.contains),
            Action::ExpectRegister(r) => format!("expect-register {:?}", r.register).to_lowercase(),
            Action::ExpectBootloader(b) => format!("expect-bootloader via {}", via_name(b.via)),
            Action::ExpectState(s) => format!("expect-state {s:?}").to_lowercase(),
            Action::ExpectResetCause(c) => format!("expect-reset-cause {c:?}").to_lowercase(),
            Action::Send(s) => match (&s.text, &s.bytes) {
                (Some(t), _) => format!("send {t:?}"),
                (None, Some(b)) => format!("send {} bytes", b.len()),
                _ => "send".into(),
            },
            other => other.keyword().to_string(),
        }
    }
}

fn via_name(v: Via) -> &'static str {
    match v {
        Via::Probe => "probe",
        Via::Uart => "uart",
        Via::Dfu => "dfu",
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StepVisitor;
        impl<'de> Visitor<'de> for StepVisitor {
            type Value = Step;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a step: a map with one action key (and optional timeout, name), or a bare action name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Step, E> {
                Ok(Step { action: Action::from_bare(v)?, timeout: None, name: None })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Step, A::Error> {
                let (mut action, mut timeout, mut name) = (None::<Action>, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "timeout" => timeout = Some(map.next_value::<Duration>()?),
                        "name" => name = Some(map.next_value::<String>()?),
                        other => {
                            if let Some(first) = &action {
                                return Err(de::Error::custom(format!(
                                    "a step has exactly one action, but this one has `{}` and `{other}`",
                                    first.keyword()
                                )));
                            }
                            action = Some(Action::from_map(other, &mut map)?);
                        }
                    }
                }
                let action = action.ok_or_else(|| {
                    de::Error::custom(format!("step has no action; expected one of: {}", Action::KEYWORDS.join(", ")))
                })?;
                Ok(Step { action, timeout, name })
            }
        }
        d.deserialize_any(StepVisitor)
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        self.action.serialize_args(&mut map)?;
        if let Some(t) = &self.timeout {
            map.serialize_entry("timeout", t)?;
        }
        if let Some(n) = &self.name {
            map.serialize_entry("name", n)?;
        }
        map.end()
    }
}

impl JsonSchema for Step {
    fn schema_name() -> Cow<'static, str> {
        "Step".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let duration = generator.subschema_for::<Duration>();
        let mut one_of = Vec::new();
        for (key, args) in Action::variant_schemas(generator) {
            one_of.push(serde_json::json!({
                "type": "object",
                "required": [key],
                "properties": { key: args, "timeout": duration, "name": { "type": "string" } },
                "additionalProperties": false
            }));
        }
        json_schema!({
            "description": "One action or expectation (a map with exactly one step keyword, plus optional timeout and name), or a bare step keyword for steps without arguments.",
            "anyOf": [
                { "oneOf": one_of },
                { "type": "string", "enum": ["halt", "resume", "reset-halt", "reset", "power-cycle", "leave"] }
            ]
        })
    }
}
