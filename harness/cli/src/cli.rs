//! Command-line syntax (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "hil",
    version = hil_rig::VERSION,
    about = "Conformance rig for STM32 bootloader flows, on virtual and lab boards",
    after_help = "Examples:\n  \
                  hil run                               the suite on the default boards (boards.yaml)\n  \
                  hil run --board nucleo-g071rb -j1     one lab board\n  \
                  hil run --scenario 'flash-*' --dry-run\n  \
                  hil run --rerun-failed                what failed in the latest run\n  \
                  hil explain                           why the latest run's failures failed\n  \
                  hil doctor                            is every lab board present and answering?\n\n\
                  boards.yaml is found in the working directory or the nearest parent (or --boards / HIL_BOARDS).\n\
                  Exit codes: 0 all passed / valid; 1 a scenario failed (or a board is not ready: doctor);\n  \
                  2 configuration or usage error; 3 the rig could not carry a scenario out (board unreachable,\n  \
                  probe lost); 4 nothing ran; 130 / 143 stopped by Ctrl-C / SIGTERM.\n\
                  Logs: -v info, -vv debug, -vvv trace; RUST_LOG overrides."
)]
pub struct Cli {
    /// More log output on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Board inventory (default: boards.yaml in the working directory or the nearest parent that
    /// has one).
    #[arg(long, env = "HIL_BOARDS", value_name = "FILE")]
    pub boards: Option<PathBuf>,
    /// Scenario files or directories (default: scenarios/ next to the boards file).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check boards.yaml and scenario files; print FILE:LINE:COL: message per problem.
    Validate(ConfigArgs),
    /// List boards or scenarios.
    List {
        /// What to list.
        what: ListWhat,
        /// Machine-readable output (probes, ports, dfu).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Run scenarios on boards and write reports.
    #[command(
        mut_arg("paths", |a| a.value_name("PATH|NAME").help(
            "Scenario files or directories, or scenario names and globs (`c09-*`): an argument that is \
             not an existing path and has no `/` is a name (default: every scenario in scenarios/ next \
             to the boards file)."
        )),
        after_help = "Examples:\n  hil run                                   the default boards, every scenario\n  \
                            hil run --board nucleo-g071rb --retries 1\n  \
                            hil run 'c09-*' --dry-run                 what would run, and why the rest is skipped\n  \
                            hil run c02-correct flash-over-uart       two scenarios by name\n  \
                            hil run --rerun-failed                    what failed in the latest run\n  \
                            hil run --fail-fast -j 1 scenarios/flash-over-uart.yaml\n\n\
                            Exit: 0 passed, 1 a scenario failed, 2 configuration, 3 the rig could not carry a scenario out,\n\
                            4 nothing ran, 130/143 stopped by SIGINT/SIGTERM."
    )]
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Run on this board (repeatable; default: the boards marked `default: true`).
        #[arg(long = "board", id = "board", value_name = "NAME")]
        board_names: Vec<String>,
        /// Where the per-run report directory goes (default: reports/ next to the boards file).
        #[arg(long, value_name = "DIR")]
        report_dir: Option<PathBuf>,
        /// How long to wait for a board another run holds (default: fail at once, naming the holder).
        #[arg(long, default_value = "0s", value_name = "DURATION")]
        lock_wait: String,
        /// Also diagnose scenarios that pass: a cause named there is a false alarm and fails the
        /// scenario (checks the diagnosis rules against a whole suite).
        #[arg(long)]
        audit_diagnosis: bool,
        /// Print only the totals (no line per scenario).
        #[arg(short, long)]
        quiet: bool,
        /// Only scenarios whose name matches (`*` matches any run of characters; repeatable).
        #[arg(long = "scenario", value_name = "NAME")]
        scenario_names: Vec<String>,
        /// Only scenarios with this tag (repeatable: any of them).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Only conformance scenarios whose class contains this text ("9." or "watchdog").
        #[arg(long, value_name = "TEXT")]
        class: Option<String>,
        /// Print the plan per board (what runs, what is skipped and why) and run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Start no further scenario after the first failure or rig error (the rest are reported
        /// as skipped, naming that failure).
        #[arg(long)]
        fail_fast: bool,
        /// Run again only what failed, errored or was interrupted in RUN (a run directory or its
        /// report.json; default: the latest run in --report-dir), on the same boards. A RUN is
        /// given as `--rerun-failed=RUN`, so a scenario path after the flag stays a path.
        #[arg(long, value_name = "RUN", num_args = 0..=1, require_equals = true)]
        rerun_failed: Option<Option<PathBuf>>,
        /// Boards run at the same time (each board runs its scenarios in order).
        #[arg(long, short = 'j', value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
        jobs: u16,
        /// Lab boards: run a failed scenario again up to N times; a pass after a retry is reported
        /// as flaky. Virtual boards are deterministic and never retried.
        #[arg(long, value_name = "N", default_value_t = 0)]
        retries: u32,
    },
    /// Flash an image through a board's bootloader or probe.
    #[command(after_help = "Examples:\n  hil flash --board g071-virtual --via uart --verify --go app.elf\n  \
                            hil flash --board nucleo-g071rb --via probe --verify app.hex\n  \
                            hil flash --board g0b1-virtual --via dfu --base 0x08000000 app.bin")]
    Flash {
        /// Board inventory (default: the nearest boards.yaml at or above the working directory).
        #[arg(long, env = "HIL_BOARDS", value_name = "FILE")]
        boards: Option<PathBuf>,
        /// The board (a name in boards.yaml).
        #[arg(long, value_name = "NAME")]
        board: String,
        /// How: through the ROM's AN3155 UART bootloader, its USB DfuSe device, or the debug probe.
        #[arg(long, value_enum)]
        via: FlashVia,
        /// Verify after writing (bootloader checksum where available, else read-back).
        #[arg(long)]
        verify: bool,
        /// Start the image afterwards (Go / DFU leave / reset).
        #[arg(long)]
        go: bool,
        /// Load address of a raw .bin file.
        #[arg(long, value_name = "ADDR")]
        base: Option<String>,
        /// What the image is: the application, or the board's custom bootloader (layout.bootloader).
        #[arg(long, value_enum, default_value = "application")]
        target: ImageRole,
        /// The image: ELF, Intel HEX, or a raw .bin with --base.
        file: PathBuf,
    },
    /// Firmware image tools.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Run a virtual board on its own.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// Benchmarks that print JSON.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Print the JSON Schema of a file format (for editors).
    Schema {
        /// Which file format.
        what: SchemaWhat,
    },
    /// Check the lab boards: probe, serial port, DFU device and power command present and
    /// accessible, the target answering (DBGMCU_IDCODE), the ROM's PID and version when it runs.
    /// Exit 1 when a board is not ready; each problem comes with its fix.
    #[command(after_help = "Examples:\n  hil doctor                       every lab board of boards.yaml\n  \
                            hil doctor --board nucleo-g071rb\n  hil doctor --board g071-virtual   a virtual board (the same checks)")]
    Doctor {
        /// Board inventory (default: the nearest boards.yaml at or above the working directory).
        #[arg(long, env = "HIL_BOARDS", value_name = "FILE")]
        boards: Option<PathBuf>,
        /// Only this board (repeatable; virtual boards too). Default: every lab board.
        #[arg(long, value_name = "NAME")]
        board: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// What the probe reads of a board: identity (DBGMCU_IDCODE, flash size, unique ID), the option
    /// bytes in effect decoded, the readout protection level and the boot source they select.
    Info {
        /// Board inventory (default: the nearest boards.yaml at or above the working directory).
        #[arg(long, env = "HIL_BOARDS", value_name = "FILE")]
        boards: Option<PathBuf>,
        /// The board (a name in boards.yaml).
        #[arg(long, value_name = "NAME")]
        board: String,
    },
    /// Print a shell completion script (e.g. `hil completions bash > /etc/bash_completion.d/hil`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show the failures of a run: the failed step, what the board sent, the named cause and the
    /// evidence behind it.
    Explain {
        /// A run directory, its report.json, or nothing for the latest run in reports/ next to the
        /// boards file.
        #[arg(value_name = "RUN")]
        run: Option<PathBuf>,
        /// Only this scenario.
        #[arg(long)]
        scenario: Option<String>,
        /// Only this board.
        #[arg(long)]
        board: Option<String>,
        /// Also the passing scenarios that carry a diagnosis (expected failures, latent mistakes).
        #[arg(long)]
        all: bool,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListWhat {
    Boards,
    Scenarios,
    /// Debug probes probe-rs sees (VID:PID:serial selectors).
    Probes,
    /// Serial ports, with the USB VID:PID:serial of their adapters.
    Ports,
    /// USB devices with a DFU interface (the ROM's DfuSe device: 0483:df11).
    Dfu,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaWhat {
    Boards,
    Scenario,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageRole {
    Application,
    Bootloader,
}

impl From<ImageRole> for hil_config::scenario::FlashTarget {
    fn from(r: ImageRole) -> Self {
        match r {
            ImageRole::Application => hil_config::scenario::FlashTarget::Application,
            ImageRole::Bootloader => hil_config::scenario::FlashTarget::Bootloader,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashVia {
    Uart,
    Dfu,
    Probe,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    High,
    Low,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Preflight an image for a board (also run before every flash).
    Check {
        /// Board inventory (default: the nearest boards.yaml at or above the working directory).
        #[arg(long, env = "HIL_BOARDS", value_name = "FILE")]
        boards: Option<PathBuf>,
        /// The board (a name in boards.yaml).
        #[arg(long, value_name = "NAME")]
        board: String,
        /// Load address of a raw .bin file.
        #[arg(long, value_name = "ADDR")]
        base: Option<String>,
        /// What the image is: the application, or the board's custom bootloader (layout.bootloader).
        #[arg(long, value_enum, default_value = "application")]
        target: ImageRole,
        /// The image: ELF, Intel HEX, or a raw .bin with --base.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Switch a virtual board's power through its debug adapter (USB VID:PID:serial), as a bench's
    /// power command does: for the `power:` commands of a lab entry that reaches a virtual board.
    Power {
        /// The debug adapter's USB selector, e.g. 1209:0001:g071-virtual.
        #[arg(long, value_name = "VID:PID:SERIAL")]
        adapter: String,
        /// Power on or off.
        #[arg(value_enum)]
        state: PowerState,
    },
    /// Run a virtual board standalone, its USART on a PTY, until Ctrl-C / SIGTERM.
    Serve {
        /// Board inventory (default: the nearest boards.yaml at or above the working directory).
        #[arg(long, env = "HIL_BOARDS", value_name = "FILE")]
        boards: Option<PathBuf>,
        /// The board (a name in boards.yaml).
        #[arg(long, value_name = "NAME")]
        board: String,
        /// Symlink the PTY here.
        #[arg(long, value_name = "PATH")]
        uart_link: Option<PathBuf>,
        /// Image to put into flash first (default: erased flash, factory option bytes).
        #[arg(long, value_name = "FILE")]
        image: Option<PathBuf>,
        /// BOOT0 pin level at power-on (default: the board entry's).
        #[arg(long, value_enum)]
        boot0: Option<Level>,
        /// Serve the board's USB device (the ROM's DfuSe device while it runs) on a usbredir
        /// socket listening here, for QEMU's `-device usb-redir` (start QEMU after `ready:`).
        #[arg(long, value_name = "PATH")]
        usbredir: Option<PathBuf>,
        /// Serve the board's debug adapter (a CDC-ACM virtual COM port bridged to the ROM's USART,
        /// DTR/RTS wired to BOOT0/NRST) on a usbredir socket listening here.
        #[arg(long, value_name = "PATH")]
        usbredir_adapter: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Flash over UART with the rig's AN3155 client and with stm32flash; print JSON.
    FlashUart {
        /// Board inventory (default: the nearest boards.yaml at or above the working directory).
        #[arg(long, env = "HIL_BOARDS", value_name = "FILE")]
        boards: Option<PathBuf>,
        /// The board (a name in boards.yaml).
        #[arg(long, value_name = "NAME")]
        board: String,
        /// Image size (e.g. 64K).
        #[arg(long, default_value = "64K")]
        size: String,
        /// Link baud rate (both clients use it).
        #[arg(long, default_value_t = 115_200)]
        baud: u32,
    },
    /// Flash over USB DFU in a Linux guest with the rig (nusb) and with dfu-util; print JSON.
    FlashDfu {
        /// Board inventory (default: the nearest boards.yaml at or above the working directory).
        #[arg(long, env = "HIL_BOARDS", value_name = "FILE")]
        boards: Option<PathBuf>,
        /// The board (a name in boards.yaml).
        #[arg(long, value_name = "NAME")]
        board: String,
        /// Image size (e.g. 64K).
        #[arg(long, default_value = "64K")]
        size: String,
    },
    /// Flash a 64 KiB image through probe-rs on the virtual board; print JSON.
    FlashProbe {
        /// Board inventory (default: the nearest boards.yaml at or above the working directory).
        #[arg(long, env = "HIL_BOARDS", value_name = "FILE")]
        boards: Option<PathBuf>,
        /// The board (a name in boards.yaml).
        #[arg(long, value_name = "NAME")]
        board: String,
    },
    /// Run the whole scenario suite in `timing: fast`; print wall and CPU time as JSON.
    Suite {
        #[command(flatten)]
        config: ConfigArgs,
        /// Run N virtual boards of the default kinds (cycling through them) instead of the
        /// default boards: how the suite scales with parallel boards. (`--boards` names the
        /// boards file, as in every command.)
        #[arg(long = "board-count", value_name = "N")]
        board_count: Option<usize>,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Every option and argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_is_described() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "hil", &mut missing);
        assert!(missing.is_empty(), "undocumented in --help: {missing:#?}");
    }
}

/// Target power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PowerState {
    On,
    Off,
}
