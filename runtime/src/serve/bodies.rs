//! Bridges between HTTP bodies and the synchronous engine, with bounded memory: a request
//! body read as a [`std::io::Read`] on a blocking thread, a [`std::io::Write`] on a blocking
//! thread sent as a response body, and JSON lines.

use axum::body::{Body, Bytes};
use std::io::{Read, Write};
use tokio::sync::mpsc;

/// Chunks in flight between the two sides (each at most one HTTP frame or 64 KiB).
const CHUNKS: usize = 16;

/// One JSON line.
pub fn ndjson_line(value: &serde_json::Value) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Decodes `%XX` and `+` of a query value.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every value of `key` in a raw query (`names=a&names=b`: Docker's clients repeat a
/// key for a list).
pub fn repeated(query: Option<&str>, key: &str) -> Vec<String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

/// A request body as a blocking reader: a task pumps its frames through a bounded
/// channel, so a slow engine holds back the client rather than buffering the body.
pub fn body_reader(body: Body) -> BodyReader {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS);
    tokio::spawn(async move {
        use tokio_stream::StreamExt;
        let mut stream = body.into_data_stream();
        while let Some(frame) = stream.next().await {
            let item = frame.map_err(std::io::Error::other);
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    BodyReader {
        rx,
        current: Bytes::new(),
    }
}

/// See [`body_reader`].
pub struct BodyReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// A response body written by `produce` on a blocking thread (a stream's: `slot`). When the client goes away
/// the writer's next write fails, so `produce` stops; an error of `produce` after bytes
/// have gone out can only cut the body short (the status is sent already).
pub fn write_stream<F>(slot: super::streams::Slot, produce: F) -> Body
where
    F: FnOnce(&mut ChannelWriter) -> Result<(), String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS);
    super::streams::spawn(slot, move || {
        let mut writer = ChannelWriter {
            tx,
            buf: Vec::with_capacity(64 * 1024),
        };
        let result = produce(&mut writer).and_then(|()| writer.flush().map_err(|e| e.to_string()));
        if let Err(e) = result {
            tracing::debug!("response stream ended early: {e}");
            let _ = writer.tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// See [`write_stream`].
pub struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_all_read() {
        let q = Some("names=a%3A1&x=y&names=b");
        assert_eq!(repeated(q, "names"), vec!["a:1", "b"]);
        assert!(repeated(None, "names").is_empty());
    }

    #[test]
    fn query_values_decode() {
        assert_eq!(percent_decode("busybox%3Alatest"), "busybox:latest");
        assert_eq!(percent_decode("a+b%2Fc"), "a b/c");
        assert_eq!(percent_decode("bad%z"), "bad%z");
    }
}
