//! Streaming gzip (RFC 1952) over `miniz_oxide`'s raw DEFLATE, for the audit archives:
//! `zcat audit-2026-01.ndjson.gz` reads them. The reader accepts one member with the
//! header the writer makes (no optional fields), checks CRC-32 and length, and refuses
//! trailing bytes.

use std::io::{self, Read, Write};

use miniz_oxide::deflate::core::{CompressorOxide, create_comp_flags_from_zip_params};
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// ID1 ID2 CM=8 FLG=0 MTIME=0 XFL=0 OS=255 (unknown): a reproducible header.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
const CHUNK: usize = 64 * 1024;

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

/// CRC-32 (IEEE) continued from `crc` over `bytes`.
fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Compresses what is written into `inner`; [`GzWriter::finish`] writes the trailer.
pub struct GzWriter<W: Write> {
    inner: W,
    compressor: Box<CompressorOxide>,
    out: Vec<u8>,
    crc: u32,
    len: u32,
}

impl<W: Write> GzWriter<W> {
    pub fn new(mut inner: W) -> io::Result<Self> {
        inner.write_all(&HEADER)?;
        // Negative window bits: raw DEFLATE, framed here.
        let flags = create_comp_flags_from_zip_params(6, -15, 0);
        Ok(Self { inner, compressor: Box::new(CompressorOxide::new(flags)), out: vec![0; CHUNK], crc: 0, len: 0 })
    }

    fn pump(&mut self, mut input: &[u8], flush: MZFlush) -> io::Result<()> {
        loop {
            let r = miniz_oxide::deflate::stream::deflate(&mut self.compressor, input, &mut self.out, flush);
            let status = r.status.map_err(|e| invalid(&format!("deflate failed: {e:?}")))?;
            self.inner.write_all(&self.out[..r.bytes_written])?;
            input = &input[r.bytes_consumed..];
            let done = match flush {
                MZFlush::Finish => status == MZStatus::StreamEnd,
                _ => input.is_empty() && r.bytes_written < self.out.len(),
            };
            if done {
                return Ok(());
            }
        }
    }

    /// Ends the stream (DEFLATE end, CRC-32, length) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.pump(&[], MZFlush::Finish)?;
        self.inner.write_all(&self.crc.to_le_bytes())?;
        self.inner.write_all(&self.len.to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for GzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.crc = crc32(self.crc, buf);
        // ISIZE is the length modulo 2^32 (RFC 1952).
        self.len = self.len.wrapping_add(buf.len() as u32);
        self.pump(buf, MZFlush::None)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decompresses a gzip member made by [`GzWriter`].
pub struct GzReader<R: Read> {
    inner: R,
    state: Box<InflateState>,
    input: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    done: bool,
    crc: u32,
    len: u32,
}

impl<R: Read> GzReader<R> {
    pub fn new(mut inner: R) -> io::Result<Self> {
        let mut header = [0u8; 10];
        inner.read_exact(&mut header).map_err(|_| invalid("not a gzip file: too short"))?;
        if header[..4] != HEADER[..4] {
            return Err(invalid("not a gzip file made by symbolon (magic, method or flags)"));
        }
        Ok(Self {
            inner,
            state: InflateState::new_boxed(DataFormat::Raw),
            input: vec![0; CHUNK],
            start: 0,
            end: 0,
            eof: false,
            done: false,
            crc: 0,
            len: 0,
        })
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end && !self.eof {
            self.start = 0;
            self.end = self.inner.read(&mut self.input)?;
            self.eof = self.end == 0;
        }
        Ok(())
    }

    /// After the DEFLATE end: the trailer, then nothing.
    fn trailer(&mut self) -> io::Result<()> {
        let mut rest = self.input[self.start..self.end].to_vec();
        self.start = self.end;
        self.inner.read_to_end(&mut rest)?;
        if rest.len() != 8 {
            return Err(invalid("gzip trailer missing or followed by other bytes"));
        }
        let crc = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if crc != self.crc || len != self.len {
            return Err(invalid("gzip CRC-32 or length does not match the content"));
        }
        Ok(())
    }
}

impl<R: Read> Read for GzReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
            let flush = if self.eof { MZFlush::Finish } else { MZFlush::None };
            let r =
                miniz_oxide::inflate::stream::inflate(&mut self.state, &self.input[self.start..self.end], buf, flush);
            self.start += r.bytes_consumed;
            let written = &buf[..r.bytes_written];
            self.crc = crc32(self.crc, written);
            self.len = self.len.wrapping_add(written.len() as u32);
            match r.status {
                Ok(MZStatus::StreamEnd) => {
                    self.done = true;
                    self.trailer()?;
                }
                Ok(_) => {}
                Err(MZError::Buf) if self.eof => return Err(invalid("gzip stream is truncated")),
                Err(MZError::Buf) => {}
                Err(e) => return Err(invalid(&format!("corrupt DEFLATE data ({e:?})"))),
            }
            if r.bytes_written > 0 {
                return Ok(r.bytes_written);
            }
            if self.eof && !self.done && r.bytes_consumed == 0 {
                return Err(invalid("gzip stream is truncated"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut w = GzWriter::new(Vec::new()).unwrap();
        for chunk in data.chunks(7777) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    fn gunzip(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        GzReader::new(data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trip_small_empty_and_large() {
        assert_eq!(crc32(0, b"123456789"), 0xcbf4_3926);
        for data in [Vec::new(), b"{\"seq\":1}\n".to_vec(), (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect()] {
            assert_eq!(gunzip(&gz(&data)).unwrap(), data);
        }
    }

    #[test]
    fn refuses_damage() {
        let data: Vec<u8> = (0..50_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let good = gz(&data);
        // A flipped bit anywhere after the header: bad DEFLATE data, or a CRC/length mismatch.
        for at in [10, good.len() / 2, good.len() - 6, good.len() - 2] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(gunzip(&bad).is_err(), "flip at {at}");
        }
        assert!(gunzip(&good[..good.len() - 3]).is_err(), "truncated trailer");
        assert!(gunzip(&good[..good.len() / 2]).is_err(), "truncated stream");
        let mut longer = good.clone();
        longer.push(0);
        assert!(gunzip(&longer).is_err(), "trailing byte");
        assert!(gunzip(b"\x1f\x8b").is_err());
        assert!(gunzip(b"{\"seq\":1}\n plain text, not gzip").is_err());
        let mut flagged = good.clone();
        flagged[3] = 4; // FEXTRA: not what the writer makes
        assert!(gunzip(&flagged).is_err());
    }
}
