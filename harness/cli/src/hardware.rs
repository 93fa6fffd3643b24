//! `hil list probes|ports|dfu`: what a lab host has attached, as the rig would open it - probe-rs's
//! probe list (selectors), the serial ports with their USB adapters' IDs (serialport reads sysfs),
//! and the USB devices with a DFU interface (nusb). Nothing is opened: listing disturbs no run.

use std::process::ExitCode;

use anyhow::{Context, Result};
use nusb::MaybeFuture;

use crate::cli::ListWhat;

pub struct Row {
    /// What to write in boards.yaml (probe selector, port path, USB selector).
    pub id: String,
    pub vid_pid_serial: Option<String>,
    pub description: String,
}

fn selector(vid: u16, pid: u16, serial: Option<&str>) -> String {
    match serial {
        Some(s) if !s.is_empty() => format!("{vid:04x}:{pid:04x}:{s}"),
        _ => format!("{vid:04x}:{pid:04x}"),
    }
}

/// The hardware `what` names (probes, ports or DFU devices); `None` for the config listings.
fn rows(what: ListWhat) -> Result<Option<Vec<Row>>> {
    Ok(Some(match what {
        ListWhat::Probes => probe_rs::probe::list::Lister::new()
            .list_all()
            .into_iter()
            .map(|p| {
                let sel = selector(p.vendor_id, p.product_id, p.serial_number.as_deref());
                Row { id: sel.clone(), vid_pid_serial: Some(sel), description: p.identifier }
            })
            .collect(),
        ListWhat::Ports => serialport::available_ports()
            .context("listing serial ports")?
            .into_iter()
            .map(|p| match p.port_type {
                serialport::SerialPortType::UsbPort(u) => Row {
                    id: p.port_name,
                    vid_pid_serial: Some(selector(u.vid, u.pid, u.serial_number.as_deref())),
                    description: [u.manufacturer, u.product].into_iter().flatten().collect::<Vec<_>>().join(" "),
                },
                other => Row { id: p.port_name, vid_pid_serial: None, description: format!("{other:?}") },
            })
            .collect(),
        // A host without a USB stack (a container, this CI machine) has no USB devices, not an error.
        ListWhat::Dfu if !std::path::Path::new("/sys/bus/usb/devices").exists() => {
            eprintln!("note: this host has no USB stack (/sys/bus/usb/devices is missing)");
            Vec::new()
        }
        ListWhat::Dfu => nusb::list_devices()
            .wait()
            .context("listing USB devices")?
            .filter(|d| d.interfaces().any(|i| i.class() == 0xFE && i.subclass() == 0x01))
            .map(|d| {
                let sel = selector(d.vendor_id(), d.product_id(), d.serial_number());
                Row {
                    id: sel.clone(),
                    vid_pid_serial: Some(sel),
                    description: [d.manufacturer_string(), d.product_string()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" "),
                }
            })
            .collect(),
        ListWhat::Boards | ListWhat::Scenarios => return Ok(None),
    }))
}

/// Print the hardware `what` names; `None` when `what` is a config listing.
pub fn list(what: ListWhat, json: bool) -> Result<Option<ExitCode>> {
    let Some(rows) = rows(what)? else { return Ok(None) };
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(
                |r| serde_json::json!({ "id": r.id, "vid_pid_serial": r.vid_pid_serial, "description": r.description }),
            )
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if rows.is_empty() {
        println!("none found");
    } else {
        for r in rows {
            println!("{:<40} {:<40} {}", r.id, r.vid_pid_serial.unwrap_or_default(), r.description);
        }
    }
    Ok(Some(ExitCode::SUCCESS))
}
