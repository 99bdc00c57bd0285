//! Where a chunked body ends, read as its bytes pass (they are passed on unchanged).

/// The longest chunk-size line (extensions included) read.
const MAX_CHUNK_LINE: usize = 4096;

/// Follows a chunked body as its bytes pass, to find where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunked {
    state: State,
    /// Bytes of the current size line (extensions included).
    line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the chunk size's hex digits (`digits` so far).
    Size {
        value: u64,
        digits: u8,
    },
    /// After `;`: an extension, up to the CR.
    Extension {
        size: u64,
    },
    /// The size line's LF.
    SizeLf {
        size: u64,
    },
    /// Chunk data still to come.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer field line, up to its CR.
    TrailerLine,
    TrailerLf,
    /// The CRLF that ends the body.
    EndLf,
    Done,
}

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line: 0,
        }
    }
}

impl Chunked {
    /// Whether the body has ended.
    pub(crate) fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads `bytes` as the next part of the body: how many of them belong to it (all,
    /// unless it ends inside them), and how many of those are chunk data.
    ///
    /// # Errors
    /// A line that is not chunked coding (or one Go could read differently).
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Result<(usize, u64), String> {
        let mut i = 0;
        let mut data = 0u64;
        while i < bytes.len() && self.state != State::Done {
            if let State::Data(left) = self.state {
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                data += take;
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data(left - take)
                };
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = self.step(b)?;
        }
        Ok((i, data))
    }

    fn step(&mut self, b: u8) -> Result<State, String> {
        let broken = |what: &str| Err(format!("malformed chunked body: {what}"));
        if matches!(self.state, State::Size { .. } | State::Extension { .. }) {
            self.line += 1;
            if self.line > MAX_CHUNK_LINE {
                return broken("chunk line too long");
            }
        }
        Ok(match self.state {
            State::Size { value, digits } => match (b as char).to_digit(16) {
                Some(d) if digits < 16 => State::Size {
                    value: (value << 4) | u64::from(d),
                    digits: digits + 1,
                },
                Some(_) => return broken("chunk size too large"),
                None if digits == 0 => return broken("no chunk size"),
                None if b == b';' => State::Extension { size: value },
                None if b == b'\r' => State::SizeLf { size: value },
                None => return broken("unexpected byte in a chunk size"),
            },
            State::Extension { size } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' => return broken("bare LF in a chunk extension"),
                b'\t' | 0x20..=0x7e | 0x80..=0xff => State::Extension { size },
                _ => return broken("control byte in a chunk extension"),
            },
            State::SizeLf { size } => {
                if b != b'\n' {
                    return broken("chunk size line without CRLF");
                }
                self.line = 0;
                if size == 0 {
                    State::TrailerStart
                } else {
                    State::Data(size)
                }
            }
            // `scan` passes data itself and stops at the end.
            State::Data(_) | State::Done => self.state,
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size {
                value: 0,
                digits: 0,
            },
            State::DataCr | State::DataLf => return broken("chunk data not followed by CRLF"),
            State::TrailerStart if b == b'\r' => State::EndLf,
            State::TrailerStart | State::TrailerLine => match b {
                b'\r' => State::TrailerLf,
                b'\n' => return broken("bare LF in a trailer"),
                _ => State::TrailerLine,
            },
            State::TrailerLf if b == b'\n' => State::TrailerStart,
            State::EndLf if b == b'\n' => State::Done,
            State::TrailerLf | State::EndLf => return broken("trailer line without CRLF"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `body` split at every position in two parts, and in one.
    fn scan_all(body: &[u8]) -> Result<(usize, u64), String> {
        let mut whole = Chunked::default();
        let (used, data) = whole.scan(body)?;
        assert!(
            whole.done(),
            "{:?} did not end",
            String::from_utf8_lossy(body)
        );
        for split in 0..body.len() {
            let mut parts = Chunked::default();
            let (a, da) = parts.scan(&body[..split])?;
            assert_eq!(a, split);
            let (b, db) = parts.scan(&body[split..])?;
            assert_eq!((a + b, da + db), (used, data), "split at {split}");
            assert!(parts.done());
        }
        Ok((used, data))
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\n10;name=value\r\n0123456789abcdef\r\n0\r\n\r\nNEXT";
        assert_eq!(
            scan_all(&body[..body.len() - 4]).unwrap(),
            (body.len() - 4, 21)
        );
        let mut c = Chunked::default();
        assert_eq!(c.scan(body).unwrap(), (body.len() - 4, 21));
        assert!(c.done());
        let trailers = b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n";
        assert_eq!(scan_all(trailers).unwrap(), (trailers.len(), 3));
        let empty = b"0\r\n\r\n";
        assert_eq!(scan_all(empty).unwrap(), (5, 0));
    }

    #[test]
    fn chunk_lines_go_could_read_differently_are_refused() {
        let cases: [&[u8]; 9] = [
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"g\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
        ];
        for case in cases {
            let mut c = Chunked::default();
            assert!(c.scan(case).is_err(), "{:?}", String::from_utf8_lossy(case));
        }
        let mut c = Chunked::default();
        let long = format!("5;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert!(c.scan(long.as_bytes()).is_err());
        let mut c = Chunked::default();
        assert!(c.scan(b"0\r\nX: 1\n\r\n").is_err());
    }
}
