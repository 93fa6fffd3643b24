//! A synthetic run with fixed timestamps, shared by the report tests.

use std::collections::BTreeMap;

use hil_report::*;

pub fn sample() -> RunReport {
    let transcript = Evidence::Transcript {
        channel: "uart".into(),
        entries: vec![
            TranscriptEntry {
                wall_offset_ms: 0,
                direction: "tx".into(),
                bytes: "7f".into(),
                decoded: Some("sync".into()),
            },
            TranscriptEntry {
                wall_offset_ms: 1,
                direction: "rx".into(),
                bytes: "79".into(),
                decoded: Some("ACK".into()),
            },
            TranscriptEntry {
                wall_offset_ms: 2,
                direction: "tx".into(),
                bytes: "02 fd".into(),
                decoded: Some("Get ID".into()),
            },
            TranscriptEntry {
                wall_offset_ms: 3,
                direction: "rx".into(),
                bytes: "79 01 04 60 79".into(),
                decoded: Some("PID 0x0460".into()),
            },
        ],
    };
    let passed = ScenarioResult {
        scenario: "enter-via-boot0".into(),
        board: "g071-virtual".into(),
        file: "scenarios/enter-via-boot0.yaml".into(),
        description: Some("BOOT0 high + NRST enters the ROM".into()),
        class: None,
        status: Status::Passed,
        expected: None,
        wall_started_at: "2026-11-21T10:00:00.000Z".into(),
        wall_duration_ms: 120,
        message: None,
        steps: vec![
            StepResult {
                cleanup: false,
                index: 0,
                keyword: "set-boot0".into(),
                summary: "set-boot0 high".into(),
                name: None,
                status: Status::Passed,
                wall_offset_ms: 0,
                wall_duration_ms: 1,
                virtual_start_us: Some(1_000),
                virtual_end_us: Some(2_000),
                message: None,
                evidence: vec![],
            },
            StepResult {
                cleanup: false,
                index: 1,
                keyword: "expect-bootloader".into(),
                summary: "expect-bootloader via uart".into(),
                name: Some("ROM answers".into()),
                status: Status::Passed,
                wall_offset_ms: 1,
                wall_duration_ms: 119,
                virtual_start_us: Some(1_000),
                virtual_end_us: Some(2_000),
                message: None,
                evidence: vec![transcript],
            },
        ],
        diagnosis: None,
        retried: vec![],
        flaky: false,
    };
    let mut snapshot = BTreeMap::new();
    snapshot.insert("pc".to_string(), 0x1FFF_0A10u32);
    snapshot.insert("primask".to_string(), 1);
    snapshot.insert("vtor".to_string(), 0x0800_0000);
    let failed = ScenarioResult {
        scenario: "jump-from-app-primask".into(),
        board: "g071-virtual".into(),
        file: "scenarios/conformance/primask.yaml".into(),
        description: None,
        class: Some("1. jump with PRIMASK set".into()),
        status: Status::Failed,
        expected: Some(ExpectedResult {
            outcome: "pass".into(),
            cause: None,
            observed_outcome: "fail".into(),
            observed_cause: Some("primask-set-at-jump".into()),
        }),
        wall_started_at: "2026-11-21T10:00:01.000Z".into(),
        wall_duration_ms: 2050,
        message: Some("step 2 expect-bootloader: no answer to 0x7F within 1s <timeout>".into()),
        steps: vec![
            StepResult {
                cleanup: false,
                index: 0,
                keyword: "send".into(),
                summary: "send \"b\"".into(),
                name: None,
                status: Status::Passed,
                wall_offset_ms: 0,
                wall_duration_ms: 2,
                virtual_start_us: Some(1_000),
                virtual_end_us: Some(2_000),
                message: None,
                evidence: vec![Evidence::Text {
                    label: "serial output".into(),
                    text: "app v1 @0x08000000\n<jumping>\n".into(),
                }],
            },
            StepResult {
                cleanup: false,
                index: 1,
                keyword: "expect-bootloader".into(),
                summary: "expect-bootloader via uart".into(),
                name: None,
                status: Status::Failed,
                wall_offset_ms: 2,
                wall_duration_ms: 2000,
                virtual_start_us: Some(1_000),
                virtual_end_us: Some(2_000),
                message: Some("no answer to 0x7F within 1s <timeout>".into()),
                evidence: vec![Evidence::Registers { label: "core at failure".into(), values: snapshot.clone() }],
            },
            StepResult {
                cleanup: false,
                index: 2,
                keyword: "expect-pc".into(),
                summary: "expect-register pc".into(),
                name: None,
                status: Status::NotRun,
                wall_offset_ms: 2002,
                wall_duration_ms: 0,
                virtual_start_us: Some(1_000),
                virtual_end_us: Some(2_000),
                message: None,
                evidence: vec![],
            },
        ],
        diagnosis: Some(Diagnosis {
            cause: "primask-set-at-jump".into(),
            title: "Interrupts disabled (PRIMASK=1) when the application jumped to the ROM".into(),
            explanation: "The ROM was entered with PRIMASK set & never re-enabled interrupts.".into(),
            facts: vec![
                Fact { name: "PRIMASK at ROM entry".into(), value: "1".into(), supports: true },
                Fact { name: "PC".into(), value: "0x1fff0a10 (system memory)".into(), supports: true },
                Fact { name: "CONTROL.SPSEL".into(), value: "0 (MSP)".into(), supports: false },
            ],
            snapshot,
            fix: Some("Call __enable_irq() (clear PRIMASK) after disabling the NVIC sources, before the jump.".into()),
        }),
        retried: vec![],
        flaky: false,
    };
    let skipped = ScenarioResult {
        scenario: "flash-over-dfu".into(),
        board: "g071-virtual".into(),
        file: "scenarios/flash-over-dfu.yaml".into(),
        description: None,
        class: None,
        status: Status::Skipped,
        expected: None,
        wall_started_at: "2026-11-21T10:00:03.000Z".into(),
        wall_duration_ms: 0,
        message: Some("board lacks usb (STM32G071RB's ROM bootloader has no USB DFU)".into()),
        steps: vec![],
        diagnosis: None,
        retried: vec![],
        flaky: false,
    };
    let mut r = RunReport {
        schema_version: SCHEMA_VERSION,
        run_id: "r0001".into(),
        tool: Tool { name: "hil".into(), version: "0.1.0".into(), revision: None, host: None },
        started_at: "2026-11-21T10:00:00.000Z".into(),
        wall_finished_at: Some("2026-11-21T10:00:03.500Z".into()),
        wall_duration_ms: 3500,
        status: RunStatus::Running,
        command: vec!["hil".into(), "run".into()],
        boards: vec![
            BoardInfo {
                name: "g071-virtual".into(),
                chip: "STM32G071RB".into(),
                kind: "virtual".into(),
                description: None,
                seen: Seen {
                    probe: Some("1209:0001:g071-virtual (hil virtual probe)".into()),
                    bootloader: Some("PID 0x0460, bootloader version 3.1 (0x31)".into()),
                    images: vec![ImageRecord {
                        name: "fixture:app@0x08000000".into(),
                        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
                        bytes: 6144,
                    }],
                },
            },
            BoardInfo {
                name: "g0b1-virtual".into(),
                chip: "STM32G0B1RE".into(),
                kind: "virtual".into(),
                description: Some("USB DFU".into()),
                seen: Default::default(),
            },
        ],
        scenarios: vec![passed, failed, skipped],
        summary: Summary::default(),
        // Computed from the scenarios' classes by finish_status.
        conformance: vec![],
    };
    r.finish_status();
    r
}
