//! AN3155 client against scripted byte exchanges (the test double in crate::testing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::testing::{Device, Handle, Host, ScriptedPort, Step};
use crate::transcript::Transcript;

const A: u8 = ACK;
const N: u8 = NACK;

/// The command list of ST's Open Bootloader V3.1 (reference 1.3) plus Get Checksum.
const OBL_COMMANDS: [u8; 13] = [0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44, 0x63, 0x73, 0x82, 0x92, 0x50, 0xA1];
/// An old F1 ROM (V2.2): legacy Erase, no Get Checksum.
const F1_COMMANDS: [u8; 11] = [0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x43, 0x63, 0x73, 0x82, 0x92];

fn fast() -> Config {
    let t = Duration::from_millis(40);
    Config {
        timeouts: Timeouts {
            read: t,
            block_write: t,
            page_erase: t,
            mass_erase: t,
            readout_unprotect: t,
            checksum: t,
            resync: Duration::from_millis(300),
            resync_probe: Duration::from_millis(10),
        },
        ..Config::default()
    }
}

fn client(script: Vec<Step>) -> (UartClient, Handle) {
    let (port, handle) = ScriptedPort::new(script);
    (UartClient::new(port, fast()), handle)
}

/// One attempt per command: the exchange as the device answered it, without recovery.
fn single_shot(script: Vec<Step>) -> (UartClient, Handle) {
    let (port, handle) = ScriptedPort::new(script);
    (UartClient::new(port, Config { retries: 0, ..fast() }), handle)
}

fn get_exchange(commands: &[u8]) -> Vec<Step> {
    let mut reply = vec![A, commands.len() as u8, 0x31];
    reply.extend_from_slice(commands);
    reply.push(A);
    vec![Host(vec![0x00, 0xFF]), Device(reply)]
}

fn with_get(commands: &[u8], mut rest: Vec<Step>) -> Vec<Step> {
    let mut s = get_exchange(commands);
    s.append(&mut rest);
    s
}

#[test]
fn connect_runs_sync_get_version_get_and_get_id() {
    let mut script =
        vec![Host(vec![0x7F]), Device(vec![A]), Host(vec![0x01, 0xFE]), Device(vec![A, 0x31, 0x00, 0x00, A])];
    // Get and Get ID replies carry no checksum: each is asked twice and must agree.
    script.extend(get_exchange(&OBL_COMMANDS));
    script.extend(get_exchange(&OBL_COMMANDS));
    script.extend([Host(vec![0x02, 0xFD]), Device(vec![A, 0x01, 0x04, 0x60, A])]);
    script.extend([Host(vec![0x02, 0xFD]), Device(vec![A, 0x01, 0x04, 0x60, A])]);
    let (mut c, h) = client(script);
    let transcript = Transcript::new();
    c.set_transcript(Some(Box::new(transcript.clone())));

    let info = c.connect().unwrap();
    h.assert_done();
    assert_eq!(info.sync, SyncOutcome::Synced);
    assert_eq!(info.version, VersionReply { version: 0x31, option_bytes: [0, 0] });
    assert_eq!(info.get.version, 0x31);
    assert_eq!(info.get.commands, OBL_COMMANDS);
    assert_eq!(info.get.erase_command(), Some(Command::ExtendedErase));
    assert_eq!(info.id, IdReply { pid: 0x460, extra: vec![] });
    assert_eq!(c.stats(), LinkStats::default());

    let text = transcript.render();
    assert!(text.contains("-- Get Version (0x01)\n"), "{text}");
    assert!(text.contains(">> 01 FE\n"), "{text}");
    assert!(text.contains("<< 79  ACK\n"), "{text}");
    assert_eq!(transcript.bytes(crate::transcript::Direction::HostToDevice), h.written());
}

#[test]
fn sync_nack_means_already_synced() {
    let (mut c, h) = client(vec![Host(vec![0x7F]), Device(vec![N])]);
    assert_eq!(c.sync().unwrap(), SyncOutcome::AlreadySynced);
    h.assert_done();
}

#[test]
fn sync_after_silence_sends_a_second_0x7f_and_accepts_its_nack() {
    // The first 0x7F started a command pair; the second completes it and fails the complement check.
    let (mut c, h) = client(vec![Host(vec![0x7F]), Host(vec![0x7F]), Device(vec![N])]);
    assert_eq!(c.sync().unwrap(), SyncOutcome::AlreadySynced);
    h.assert_done();
}

#[test]
fn sync_skips_the_tail_of_the_firmware_output_instead_of_sending_another_0x7f() {
    // Seen in the suite: the application's "\r\n" after "reset+jump" arrived after the port was
    // cleared. A second 0x7F here would leave the ROM one command byte out of step.
    let (mut c, h) = client(vec![Host(vec![0x7F]), Device(vec![b'\r', b'\n', A])]);
    assert_eq!(c.sync().unwrap(), SyncOutcome::Synced);
    h.assert_done();
}

#[test]
fn sync_gives_up_after_its_attempts_within_the_deadlines() {
    let (port, _h) = ScriptedPort::new(vec![]);
    let mut c = UartClient::new(port, Config { sync_attempts: 2, ..fast() });
    let started = Instant::now();
    let e = c.sync().unwrap_err();
    // 2 attempts x 2 bytes x 40 ms, with slack.
    assert!(started.elapsed() < Duration::from_millis(600), "{:?}", started.elapsed());
    assert!(matches!(e, UartError::SyncFailed { attempts: 2 }), "{e}");
    assert!(e.to_string().starts_with("sync: no ACK or NACK to 0x7F after 2 attempts"), "{e}");
}

#[test]
fn get_version_handles_the_l412_extra_ack() {
    // [SF]: the L412/422 bootloader V13.1 sends an extra ACK after init.
    let (mut c, h) = client(vec![Host(vec![0x01, 0xFE]), Device(vec![A, A, 0x31, 0x00, 0x00, A])]);
    assert_eq!(c.get_version().unwrap(), VersionReply { version: 0x31, option_bytes: [0, 0] });
    h.assert_done();
}

#[test]
fn read_memory_frames_and_splits_into_256_byte_blocks() {
    let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let (mut c, h) = client(vec![
        Host(vec![0x11, 0xEE]),
        Device(vec![A]),
        Host(vec![0x08, 0x00, 0x10, 0x00, 0x18]),
        Device(vec![A]),
        Host(vec![0xFF, 0x00]),
        Device([&[A][..], &data[..256]].concat()),
        Host(vec![0x11, 0xEE]),
        Device(vec![A]),
        Host(vec![0x08, 0x00, 0x11, 0x00, 0x19]),
        Device(vec![A]),
        Host(vec![43, !43]),
        Device([&[A][..], &data[256..]].concat()),
    ]);
    assert_eq!(c.read(0x0800_1000, 300).unwrap(), data);
    h.assert_done();
}

#[test]
fn nack_errors_say_what_was_sent_and_guess_no_cause() {
    // One NACK is as likely a corrupted byte as a refusal: no hint.
    let (mut c, _h) = single_shot(vec![Host(vec![0x11, 0xEE]), Device(vec![N])]);
    let e = c.read_memory(0x0800_0000, 16).unwrap_err();
    assert!(e.is_nack());
    assert_eq!(
        e.to_string(),
        "Read Memory (0x11) at 0x08000000: device answered NACK after the command bytes to 11 EE"
    );

    let (mut c, _h) = single_shot(vec![
        Host(vec![0x31, 0xCE]),
        Device(vec![A]),
        Host(vec![0x20, 0x00, 0x23, 0x5C, 0x20 ^ 0x23 ^ 0x5C]),
        Device(vec![N]),
    ]);
    let e = c.write_memory(0x2000_235C, &[0; 4]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Write Memory (0x31) at 0x2000235C: device answered NACK after the address to 20 00 23 5C 5F"
    );
}

#[test]
fn the_address_hint_needs_the_address_outside_the_known_map() {
    let script = |a: u32| {
        vec![Host(vec![0x11, 0xEE]), Device(vec![A]), Host(protocol::address_frame(a).to_vec()), Device(vec![N])]
    };
    let map = vec![0x0800_0000..0x0802_0000, 0x2000_0000..0x2000_9000];
    for (address, hinted) in [(0x0800_0100, false), (0x3000_0000, true)] {
        let (port, _h) = ScriptedPort::new(script(address));
        let mut c = UartClient::new(port, Config { retries: 0, memory_map: map.clone(), ..fast() });
        let e = c.read_memory(address, 4).unwrap_err();
        let UartError::Nack { hint, .. } = &e else { panic!("{e}") };
        assert_eq!(hint.is_some(), hinted, "{e}");
        if hinted {
            assert!(
                e.to_string().ends_with(
                    "(0x30000000 is outside the bootloader's memory map (0x08000000..0x08020000, 0x20000000..0x20009000))"
                ),
                "{e}"
            );
        }
    }
}

#[test]
fn write_pads_to_words_with_ff_and_checksums_the_block() {
    // Values 0..=250 only: the block leaves resync fillers free (see the halves test below).
    let data: Vec<u8> = (1..=301u32).map(|i| (i % 251) as u8).collect();
    let mut first = vec![0xFF];
    first.extend_from_slice(&data[..256]);
    first.push(protocol::xor(&first));
    // 45 bytes -> 48: N = 47, three 0xFF pads.
    let mut second = vec![47];
    second.extend_from_slice(&data[256..]);
    second.extend_from_slice(&[0xFF; 3]);
    second.push(protocol::xor(&second));
    let (mut c, h) = client(vec![
        Host(vec![0x31, 0xCE]),
        Device(vec![A]),
        Host(protocol::address_frame(0x0800_0000).to_vec()),
        Device(vec![A]),
        Host(first),
        Device(vec![A]),
        Host(vec![0x31, 0xCE]),
        Device(vec![A]),
        Host(protocol::address_frame(0x0800_0100).to_vec()),
        Device(vec![A]),
        Host(second),
        Device(vec![A]),
    ]);
    c.write(0x0800_0000, &data).unwrap();
    h.assert_done();
}

#[test]
fn invalid_arguments_are_refused_before_any_byte_is_sent() {
    let (mut c, h) = client(vec![]);
    let e = c.write_memory(0x0800_0002, &[1, 2]).unwrap_err();
    assert_eq!(e.to_string(), "Write Memory (0x31) at 0x08000002: the address must be 4-byte aligned");
    assert!(c.write_memory(0x0800_0000, &[0; 257]).is_err());
    assert!(c.read_memory(0x0800_0000, 0).is_err());
    assert!(c.read(0xFFFF_FF00, 0x200).is_err());
    assert!(c.get_checksum(0x0800_0001, 4).is_err());
    assert!(h.written().is_empty());
}

#[test]
fn extended_erase_is_chosen_from_get_and_split_into_511_page_commands() {
    let pages: Vec<u16> = (0..600).collect();
    let frame = |pages: &[u16]| {
        let mut f = ((pages.len() - 1) as u16).to_be_bytes().to_vec();
        for p in pages {
            f.extend_from_slice(&p.to_be_bytes());
        }
        f.push(protocol::xor(&f));
        f
    };
    let (mut c, h) = client(with_get(
        &OBL_COMMANDS,
        vec![
            Host(vec![0x44, 0xBB]),
            Device(vec![A]),
            Host(frame(&pages[..511])),
            Device(vec![A]),
            Host(vec![0x44, 0xBB]),
            Device(vec![A]),
            Host(frame(&pages[511..])),
            Device(vec![A]),
        ],
    ));
    c.erase_pages(&pages).unwrap();
    h.assert_done();
}

#[test]
fn legacy_erase_uses_one_byte_pages_and_ff_00_for_mass_erase() {
    let (mut c, h) = client(with_get(
        &F1_COMMANDS,
        vec![
            Host(vec![0x43, 0xBC]),
            Device(vec![A]),
            Host(vec![2, 4, 5, 9, 2 ^ 4 ^ 5 ^ 9]),
            Device(vec![A]),
            Host(vec![0x43, 0xBC]),
            Device(vec![A]),
            Host(vec![0xFF, 0x00]),
            Device(vec![A]),
        ],
    ));
    c.erase_pages(&[4, 5, 9]).unwrap();
    c.mass_erase().unwrap();
    let e = c.erase_pages(&[300]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Erase (0x43) of page 300: page 300 needs Extended Erase; Erase (0x43) numbers pages in one byte"
    );
    let e = c.special_erase(MassErase::Bank2).unwrap_err();
    assert!(e.to_string().contains("bank 2 mass erase needs Extended Erase (0x44)"), "{e}");
    let e = c.get_checksum(0x0800_0000, 4).unwrap_err();
    assert!(matches!(e, UartError::NotSupported { command: Command::GetChecksum, .. }), "{e}");
    h.assert_done();
}

#[test]
fn extended_mass_and_bank_erase_codes() {
    let (mut c, h) = single_shot(with_get(
        &OBL_COMMANDS,
        vec![
            Host(vec![0x44, 0xBB]),
            Device(vec![A]),
            Host(vec![0xFF, 0xFF, 0x00]),
            Device(vec![A]),
            Host(vec![0x44, 0xBB]),
            Device(vec![A]),
            Host(vec![0xFF, 0xFD, 0x02]),
            Device(vec![N]),
        ],
    ));
    c.mass_erase().unwrap();
    let e = c.special_erase(MassErase::Bank2).unwrap_err();
    assert_eq!(e.to_string(), "Extended Erase (0x44): device answered NACK at the end of the operation to FF FD 02");
    assert!(c.erase_pages(&[0xFFF0]).is_err(), "reserved page codes are refused");
    h.assert_done();
}

#[test]
fn go_sends_the_vector_table_address_and_takes_one_ack() {
    let (mut c, h) =
        client(vec![Host(vec![0x21, 0xDE]), Device(vec![A]), Host(vec![0x08, 0, 0, 0, 0x08]), Device(vec![A])]);
    c.go(0x0800_0000).unwrap();
    h.assert_done();
}

#[test]
fn readout_unprotect_waits_for_the_second_ack() {
    let (mut c, h) = client(vec![Host(vec![0x92, 0x6D]), Device(vec![A, A])]);
    c.readout_unprotect().unwrap();
    h.assert_done();
    let (mut c, _h) = single_shot(vec![Host(vec![0x92, 0x6D]), Device(vec![A])]);
    let e = c.readout_unprotect().unwrap_err();
    assert!(e.is_timeout(), "{e}");
}

#[test]
fn get_checksum_exchange_and_reply_check() {
    let crc = stm32_crc(&[0u8; 16]);
    let b = crc.to_be_bytes();
    let mut reply = b.to_vec();
    reply.push(protocol::xor(&b));
    let (mut c, h) = single_shot(with_get(
        &OBL_COMMANDS,
        vec![
            Host(vec![0xA1, 0x5E]),
            Device(vec![A]),
            Host(protocol::address_frame(0x0800_0000).to_vec()),
            Device(vec![A]),
            Host(protocol::address_frame(16).to_vec()),
            Device(vec![A, A]),
            Device(reply.clone()),
            Host(vec![0xA1, 0x5E]),
            Device(vec![A]),
            Host(protocol::address_frame(0x0800_0000).to_vec()),
            Device(vec![A]),
            Host(protocol::address_frame(16).to_vec()),
            Device(vec![A, A, b[0], b[1], b[2], b[3], !reply[4]]),
            // A garbled reply may leave the device anywhere: resync. It was waiting for a
            // command, so the first filler is taken as one and the second completes the pair.
            Host(vec![0xFE]),
            Host(vec![0xFE]),
            Device(vec![N]),
        ],
    ));
    assert_eq!(c.get_checksum(0x0800_0000, 16).unwrap(), crc);
    let e = c.get_checksum(0x0800_0000, 16).unwrap_err();
    assert!(e.to_string().starts_with("Get Checksum (0xA1) at 0x08000000: malformed reply: CRC bytes"), "{e}");
    h.assert_done();
}

#[test]
fn a_lost_byte_times_out_then_the_link_is_resynchronized() {
    // The device lost one address byte, so it waits for a fifth; the host times out, sends a
    // filler that is not in the frame (so it cannot complete it into a valid one), the device
    // answers NACK, and the next command works.
    let (mut c, h) = single_shot(vec![
        Host(vec![0x11, 0xEE]),
        Device(vec![A]),
        Host(protocol::address_frame(0x0800_0000).to_vec()),
        Host(vec![0xFE]),
        Device(vec![N]),
        Host(vec![0x02, 0xFD]),
        Device(vec![A, 0x01, 0x04, 0x10, A]),
    ]);
    let e = c.read_memory(0x0800_0000, 4).unwrap_err();
    assert!(matches!(e, UartError::Timeout { resynced: true, stage: Stage::Address, .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "Read Memory (0x11) at 0x08000000: no reply after the address within 40ms (got 0 of 1 bytes); link resynchronized"
    );
    assert_eq!(c.get_id().unwrap().pid, 0x410);
    h.assert_done();
}

#[test]
fn resync_is_bounded() {
    let (mut c, h) = client(vec![]);
    let started = Instant::now();
    let e = c.resync().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(e.to_string(), "resync: the device answered none of the filler bytes with NACK within 300ms");
    // Single fillers first, then growing bursts while the device stays silent.
    let written = h.written();
    assert!(written.len() > 8 && written.iter().all(|b| *b == 0xFF), "{written:02X?}");
}

#[test]
fn busy_bytes_are_skipped_and_garbage_is_an_error() {
    let (mut c, h) = client(vec![
        Host(vec![0x21, 0xDE]),
        Device(vec![BUSY, BUSY, A]),
        Host(vec![0x08, 0, 0, 0, 0x08]),
        Device(vec![0x42]),
    ]);
    let e = c.go(0x0800_0000).unwrap_err();
    assert_eq!(e.to_string(), "Go (0x21) at 0x08000000: expected ACK or NACK after the address, got 0x42");
    h.assert_done();
}

#[test]
fn commands_not_listed_by_get_are_refused_locally() {
    let (mut c, h) = client(get_exchange(&[0x00, 0x01, 0x02, 0x11]));
    c.get().unwrap();
    let e = c.go(0x0800_0000).unwrap_err();
    assert_eq!(e.to_string(), "Go (0x21): not offered by this bootloader (Get lists 00 01 02 11)");
    h.assert_done();
}

#[test]
fn malformed_replies_do_not_panic() {
    // Get ID claiming 0 bytes of PID.
    let (mut c, _h) = single_shot(vec![Host(vec![0x02, 0xFD]), Device(vec![A, 0x00, 0x04, A])]);
    let e = c.get_id().unwrap_err();
    assert!(e.to_string().contains("1 byte(s) of product ID"), "{e}");
    // Get with a huge N and a short body: times out instead of waiting forever.
    let (mut c, _h) = single_shot(vec![Host(vec![0x00, 0xFF]), Device(vec![A, 0xFF, 0x31])]);
    assert!(c.get().unwrap_err().is_timeout());
}

#[test]
fn pty_like_ports_keep_8n1_and_that_is_not_an_error() {
    let (mut port, h) = ScriptedPort::new(vec![]);
    h.state().drops_parity = true;
    let s = configure_port(port.as_mut(), 115_200).unwrap();
    assert_eq!(s, LineSettings { baud_rate: 115_200, parity: Parity::None, parity_applied: false });
    h.state().drops_parity = false;
    assert!(configure_port(port.as_mut(), 57_600).unwrap().parity_applied);
}

#[test]
fn pages_touched_by_ranges() {
    let pages =
        pages_touched(0x0800_0000, 0x800, [(0x0800_0000, 0x10), (0x0800_07FC, 8), (0x0800_4000, 0x801)]).unwrap();
    assert_eq!(pages, [0, 1, 8, 9]);
    assert!(pages_touched(0x0800_0000, 0x800, [(0x0700_0000, 4)]).is_err());
    assert_eq!(pages_touched(0x0800_0000, 0x800, [(0x0800_0000, 0)]).unwrap(), Vec::<u16>::new());
}

/// Over a real Linux PTY: the client asks for 8E1, the PTY keeps 8N1 (reference 7), and the
/// protocol still works. The peer here is a few lines answering two commands, not a ROM model.
#[cfg(target_os = "linux")]
#[test]
fn works_over_a_real_pty_that_drops_parity() {
    use std::io::{Read as _, Write as _};

    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};

    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let path = ptsname_r(&master).unwrap();
    let (port, settings) = open_port(&path, 115_200).unwrap();
    assert!(!settings.parity_applied, "Linux PTYs keep 8N1: {settings:?}");

    let peer = std::thread::spawn(move || {
        let mut master = master;
        let mut b = [0u8; 2];
        master.read_exact(&mut b[..1]).unwrap();
        assert_eq!(b[0], 0x7F);
        master.write_all(&[ACK]).unwrap();
        master.read_exact(&mut b).unwrap();
        assert_eq!(b, [0x02, 0xFD]);
        master.write_all(&[ACK, 0x01, 0x04, 0x60, ACK]).unwrap();
        // Keep the master open until the client is done reading.
        std::thread::sleep(Duration::from_millis(200));
    });
    let mut c = UartClient::new(port, Config::default());
    assert_eq!(c.sync().unwrap(), SyncOutcome::Synced);
    assert_eq!(c.get_id().unwrap().pid, 0x460);
    peer.join().unwrap();
}

// ----- recovery on a noisy link ---------------------------------------------------------------

/// Read Memory of `data.len()` bytes at `address`, answered with `data`.
fn read_exchange(address: u32, data: &[u8]) -> Vec<Step> {
    let n = (data.len() - 1) as u8;
    vec![
        Host(vec![0x11, 0xEE]),
        Device(vec![A]),
        Host(protocol::address_frame(address).to_vec()),
        Device(vec![A]),
        Host(vec![n, !n]),
        Device([&[A][..], data].concat()),
    ]
}

/// Write Memory of `data` (a multiple of 4 bytes) at `address`, without the device's final answer.
fn write_exchange(address: u32, data: &[u8]) -> Vec<Step> {
    let mut frame = vec![(data.len() - 1) as u8];
    frame.extend_from_slice(data);
    frame.push(protocol::xor(&frame));
    vec![
        Host(vec![0x31, 0xCE]),
        Device(vec![A]),
        Host(protocol::address_frame(address).to_vec()),
        Device(vec![A]),
        Host(frame),
    ]
}

fn noted(t: &Transcript, text: &str) -> bool {
    t.records().iter().any(|r| matches!(&r.event, crate::transcript::Event::Note(n) if n.contains(text)))
}

#[test]
fn a_corrupted_command_byte_is_nacked_and_the_command_sent_again() {
    // The device saw a wrong complement and answered NACK; it waits for a command again, so
    // the client sends the command again without a resync.
    let mut script = vec![Host(vec![0x11, 0xEE]), Device(vec![N])];
    script.extend(read_exchange(0x0800_0000, &[1, 2, 3, 4]));
    let (mut c, h) = client(script);
    let t = Transcript::new();
    c.set_transcript(Some(Box::new(t.clone())));
    assert_eq!(c.read_memory(0x0800_0000, 4).unwrap(), [1, 2, 3, 4]);
    h.assert_done();
    assert_eq!(c.stats(), LinkStats { retries: 1, resyncs: 0, confirmed_by_read_back: 0 });
    assert!(noted(&t, "retry 1 of 4: Read Memory (0x11) at 0x08000000 after: "), "{}", t.render());
}

#[test]
fn a_corrupted_data_byte_fails_the_block_checksum_and_the_block_is_written_again() {
    let data = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut script = write_exchange(0x0800_0000, &data);
    script.push(Device(vec![N]));
    script.extend(write_exchange(0x0800_0000, &data));
    script.push(Device(vec![A]));
    let (mut c, h) = client(script);
    c.write_memory(0x0800_0000, &data).unwrap();
    h.assert_done();
    // A NACK at the end means the device did not write: no read-back is needed.
    assert_eq!(c.stats(), LinkStats { retries: 1, resyncs: 0, confirmed_by_read_back: 0 });
}

#[test]
fn a_write_block_that_lost_a_byte_is_resynced_and_written_again() {
    let data = [1, 2, 3, 4, 5, 6, 7, 8];
    // The device lost a data byte and waits for one more; the host hears nothing.
    let mut script = write_exchange(0x0800_0000, &data);
    // The filler 0xFE is in none of the bytes sent, so it cannot stand in for the lost byte
    // (the XOR check passes exactly when it equals it): the device NACKs the frame. That the
    // very first filler completed a frame shows the block was never taken: no read-back.
    script.extend([Host(vec![0xFE]), Device(vec![N])]);
    script.extend(write_exchange(0x0800_0000, &data));
    script.push(Device(vec![A]));
    let (mut c, h) = client(script);
    c.write_memory(0x0800_0000, &data).unwrap();
    h.assert_done();
    assert_eq!(c.stats(), LinkStats { retries: 1, resyncs: 1, confirmed_by_read_back: 0 });
}

#[test]
fn a_lost_ack_after_a_written_block_is_confirmed_by_read_back_not_written_twice() {
    let data = [9, 8, 7, 6];
    let mut script = write_exchange(0x0800_0100, &data);
    // The device wrote the block; its ACK was lost. It waits for a command, so the first
    // filler is taken as an opcode (silence) and the second fails the complement (NACK).
    script.extend([Host(vec![0xFE]), Host(vec![0xFE]), Device(vec![N])]);
    script.extend(read_exchange(0x0800_0100, &data));
    let (mut c, h) = client(script);
    c.write_memory(0x0800_0100, &data).unwrap();
    h.assert_done();
    assert_eq!(c.stats(), LinkStats { retries: 1, resyncs: 1, confirmed_by_read_back: 1 });
}

#[test]
fn a_block_that_reads_back_neither_written_nor_erased_fails_cleanly() {
    let data = [9, 8, 7, 6];
    let mut script = write_exchange(0x0800_0100, &data);
    script.extend([Host(vec![0xFE]), Host(vec![0xFE]), Device(vec![N])]);
    script.extend(read_exchange(0x0800_0100, &[9, 0, 7, 6]));
    // The last attempt ended on a reply that may have been garbled: leave the device in step.
    script.extend([Host(vec![0xFE]), Host(vec![0xFE]), Device(vec![N])]);
    let (port, h) = ScriptedPort::new(script);
    let mut c = UartClient::new(port, Config { retries: 1, ..fast() });
    let e = c.write_memory(0x0800_0100, &data).unwrap_err();
    h.assert_done();
    assert!(
        matches!(&e, UartError::RetriesExhausted { attempts: 2, last, .. }
            if matches!(**last, UartError::ReadBackDiffers { offset: 1, expected: 8, got: 0, .. })),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "Write Memory (0x31) at 0x08000100: gave up after 2 attempts; the last one: Write Memory (0x31) at 0x08000100: the block reads back 0x00 at offset 1 where 0x08 was sent, and is not erased (the flash needs an erase before it takes the block again)"
    );
}

#[test]
fn retries_are_bounded_and_only_a_repeated_command_nack_hints_at_protection() {
    // Five NACKs right after the command bytes (1 + 4 retries), while Get was answered: that is
    // evidence of readout protection, which one NACK is not.
    let mut script = get_exchange(&OBL_COMMANDS);
    script.extend([Host(vec![0x11, 0xEE]), Device(vec![N]), Host(vec![0x11, 0xEE]), Device(vec![N])]);
    for _ in 0..3 {
        script.extend([Host(vec![0xFE]), Host(vec![0xFE]), Device(vec![N]), Host(vec![0x11, 0xEE]), Device(vec![N])]);
    }
    // Get Version, which protection does not block, goes through: the link works.
    script.extend([Host(vec![0x01, 0xFE]), Device(vec![A, 0x31, 0x00, 0x00, A])]);
    let (mut c, h) = client(script);
    c.get().unwrap();
    let e = c.read_memory(0x0800_0000, 4).unwrap_err();
    h.assert_done();
    assert!(e.is_nack());
    assert_eq!(
        e.to_string(),
        "Read Memory (0x11) at 0x08000000: gave up after 5 attempts; the last one: Read Memory (0x11) at 0x08000000: device answered NACK after the command bytes to 11 EE (the same NACK on all 5 attempts while Get Version was answered: readout protection active?)"
    );
    assert_eq!(c.stats().retries, 4);
}

#[test]
fn repeated_command_nacks_on_a_link_that_fails_get_version_too_give_no_hint() {
    let mut script = vec![Host(vec![0x11, 0xEE]), Device(vec![N]), Host(vec![0x11, 0xEE]), Device(vec![N])];
    script.extend([Host(vec![0x01, 0xFE]), Device(vec![N])]);
    let (port, h) = ScriptedPort::new(script);
    let mut c = UartClient::new(port, Config { retries: 1, ..fast() });
    let e = c.read_memory(0x0800_0000, 4).unwrap_err();
    h.assert_done();
    assert!(matches!(e.last(), UartError::Nack { hint: None, .. }), "{e}");
}

#[test]
fn mixed_failures_give_no_protection_hint() {
    // A NACK after the command bytes, then one after the address: a noisy link, not protection.
    let mut script = vec![Host(vec![0x11, 0xEE]), Device(vec![N])];
    script.extend([
        Host(vec![0x11, 0xEE]),
        Device(vec![A]),
        Host(protocol::address_frame(0x0800_0000).to_vec()),
        Device(vec![N]),
    ]);
    let (port, h) = ScriptedPort::new(script);
    let mut c = UartClient::new(port, Config { retries: 1, ..fast() });
    let e = c.read_memory(0x0800_0000, 4).unwrap_err();
    h.assert_done();
    assert!(!e.to_string().contains("protection"), "{e}");
    assert!(matches!(e.last(), UartError::Nack { stage: Stage::Address, hint: None, .. }), "{e:?}");
}

#[test]
fn go_is_not_sent_again_once_the_device_may_have_jumped() {
    // Silence after the address: the device may be running the application. No retry, no
    // resync bytes into the application's UART.
    let (mut c, h) =
        client(vec![Host(vec![0x21, 0xDE]), Device(vec![A]), Host(protocol::address_frame(0x0800_0000).to_vec())]);
    let e = c.go(0x0800_0000).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(h.written().len(), 7, "{:02X?}", h.written());
    assert_eq!(c.stats().retries, 0);
}

/// A client whose waits pass on a manual clock (like a gated virtual board), with a deadline.
fn on_manual_clock(
    script: Vec<Step>,
    config: Config,
    deadline: Duration,
) -> (UartClient, Handle, Arc<crate::clock::testing::ManualClock>) {
    let clock = Arc::new(crate::clock::testing::ManualClock::default());
    let (port, h) = ScriptedPort::new(script);
    h.state().clock = Some(clock.clone());
    let dyn_clock: Arc<dyn crate::clock::Clock> = clock.clone();
    let mut c = UartClient::with_clock(port, config, dyn_clock.clone());
    c.set_deadline(Some(crate::clock::Deadline::after(&dyn_clock, deadline)));
    (c, h, clock)
}

#[test]
fn a_lost_byte_in_an_extended_erase_ends_at_the_callers_deadline_not_after_every_page_timeout() {
    // Issue 19: 48 pages x 5 s per page (stm32flash's figure) made the host wait 240 s for the
    // ACK of a page list the device was still waiting to complete, past a 60 s step deadline.
    let pages: Vec<u16> = (0..48).collect();
    let mut frame = 47u16.to_be_bytes().to_vec();
    for p in &pages {
        frame.extend_from_slice(&p.to_be_bytes());
    }
    frame.push(protocol::xor(&frame));
    let script = with_get(&OBL_COMMANDS, vec![Host(vec![0x44, 0xBB]), Device(vec![A]), Host(frame)]);
    let config = Config { timeouts: Timeouts::default(), ..Config::default() };
    let (mut c, _h, clock) = on_manual_clock(script, config, Duration::from_secs(60));
    let e = c.erase_pages(&pages).unwrap_err();
    assert!(
        matches!(e, UartError::DeadlineExceeded { command: Command::ExtendedErase, stage: Stage::Completion, .. }),
        "{e:?}"
    );
    let now = crate::clock::Clock::now(clock.as_ref());
    assert!(now <= Duration::from_secs(60), "waited {now:?} on the board's clock");
}

#[test]
fn a_silent_device_fails_cleanly_within_the_deadline_on_the_port_clock() {
    let config = Config { timeouts: Timeouts { read: Duration::from_secs(10), ..Timeouts::default() }, ..fast() };
    let (mut c, _h, clock) = on_manual_clock(vec![], config, Duration::from_secs(2));
    let e = c.read_memory(0x0800_0000, 4).unwrap_err();
    assert!(matches!(e, UartError::DeadlineExceeded { retries: 0, .. }), "{e:?}");
    assert_eq!(crate::clock::Clock::now(clock.as_ref()), Duration::from_secs(2));
    assert_eq!(
        e.to_string(),
        "Read Memory (0x11) at 0x08000000: the caller's deadline passed after the command bytes (after 0 retries of this command)"
    );
}

#[test]
fn a_lost_byte_in_a_long_frame_is_filled_by_growing_bursts() {
    // The device lost the Write Memory count byte and took the first data byte (0xFF) as the
    // count: it waits for far more bytes than were sent. Lone fillers get no answer, so bursts
    // grow until the frame is full and the pairs after it are NACKed.
    let clock = Arc::new(crate::clock::testing::ManualClock::default());
    let (port, h) = ScriptedPort::new(vec![]);
    h.state().clock = Some(clock.clone());
    let dyn_clock: Arc<dyn crate::clock::Clock> = clock.clone();
    let mut c = UartClient::with_clock(port, fast(), dyn_clock);
    // A device model just for this: it needs 200 more bytes, then NACKs every second byte.
    let mut seen = 0usize;
    h.state().responder = Some(crate::testing::Responder(Box::new(move |_| {
        seen += 1;
        if seen > 200 && (seen - 200).is_multiple_of(2) { vec![N] } else { vec![] }
    })));
    c.resync().unwrap();
    let sent = h.written().len();
    assert!(sent > 200 && sent < 600, "{sent} fillers");
    // Growing bursts: far fewer waits than fillers.
    let waited = crate::clock::Clock::now(clock.as_ref());
    assert!(waited < Duration::from_millis(10 * 40), "{waited:?}");
}

#[test]
fn a_block_holding_every_filler_value_is_written_in_halves() {
    // 256 bytes stepping by 7 hold every byte value: no filler would be sure to fail the block's
    // checksum after a lost byte, so the block goes as two 128-byte blocks.
    let data: Vec<u8> = (0..256u32).map(|i| (i * 7) as u8).collect();
    let mut script = write_exchange(0x0800_0000, &data[..128]);
    script.push(Device(vec![A]));
    script.extend(write_exchange(0x0800_0080, &data[128..]));
    script.push(Device(vec![A]));
    let (mut c, h) = client(script);
    c.write_memory(0x0800_0000, &data).unwrap();
    h.assert_done();
}

#[test]
fn read_backs_corrupted_on_the_way_back_are_combined() {
    // The block was written and its ACK lost; each read-back has one byte corrupted on the way
    // to the host, at different places: together they show every byte as written.
    let data = [9, 8, 7, 6];
    let mut script = write_exchange(0x0800_0100, &data);
    script.extend([Host(vec![0xFE]), Host(vec![0xFE]), Device(vec![N])]);
    script.extend(read_exchange(0x0800_0100, &[9, 8, 7, 0x16]));
    script.extend([Host(vec![0xFE]), Host(vec![0xFE]), Device(vec![N])]);
    script.extend(read_exchange(0x0800_0100, &[0x19, 8, 7, 6]));
    let (mut c, h) = client(script);
    c.write_memory(0x0800_0100, &data).unwrap();
    h.assert_done();
    assert_eq!(c.stats(), LinkStats { retries: 2, resyncs: 2, confirmed_by_read_back: 1 });
}
