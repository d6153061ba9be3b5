//! The TCP figures: a server in the instance (`serve`) and the host side that drives it through
//! a published port. A connection's first byte picks the mode: `e` echoes every byte back
//! (round trips), `s` swallows everything until EOF and answers with the count (throughput).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Serves connections one after another, forever (the instance is stopped from outside).
pub fn serve(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    println!("capsa-probe: serving on port {port}");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_nodelay(true);
        let _ = handle(&mut conn);
    }
    Ok(())
}

fn handle(conn: &mut TcpStream) -> std::io::Result<()> {
    let mut mode = [0u8; 1];
    conn.read_exact(&mut mode)?;
    let mut buf = vec![0u8; 256 << 10];
    match mode[0] {
        b'e' => loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&buf[..n])?;
        },
        b's' => {
            let mut total: u64 = 0;
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            conn.write_all(&total.to_be_bytes())
        }
        other => Err(std::io::Error::other(format!("unknown mode byte {other}"))),
    }
}

fn connect(addr: impl ToSocketAddrs, mode: u8) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(&[mode])?;
    Ok(s)
}

/// Microseconds of each of `count` one-byte round trips.
pub fn round_trips(addr: impl ToSocketAddrs, count: usize) -> std::io::Result<Vec<f64>> {
    let mut s = connect(addr, b'e')?;
    let mut samples = Vec::with_capacity(count);
    let mut byte = [0u8; 1];
    for _ in 0..count {
        let start = Instant::now();
        s.write_all(b"x")?;
        s.read_exact(&mut byte)?;
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(samples)
}

/// MiB per second of sending `mib` MiB, counted by the far end.
pub fn throughput(addr: impl ToSocketAddrs, mib: usize) -> std::io::Result<f64> {
    let mut s = connect(addr, b's')?;
    let chunk = vec![0x3cu8; 1 << 20];
    let start = Instant::now();
    for _ in 0..mib {
        s.write_all(&chunk)?;
    }
    s.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let secs = start.elapsed().as_secs_f64();
    let received = u64::from_be_bytes(count);
    if received != (mib as u64) << 20 {
        return Err(std::io::Error::other(format!(
            "the probe received {received} bytes of {}",
            (mib as u64) << 20
        )));
    }
    Ok(mib as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_throughput_against_a_local_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten().take(2) {
                let mut conn = conn;
                let _ = handle(&mut conn);
            }
        });
        let rtts = round_trips(addr, 10).unwrap();
        assert_eq!(rtts.len(), 10);
        assert!(throughput(addr, 2).unwrap() > 0.0);
    }
}
