//! A stream frontend's output (1.3).

use super::{Reader, WireError, Writer};

/// What a stream frontend's `kvs_stream_data` returns (1.3): bytes to send to the client
/// and whether to close the connection after sending them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOutput {
    /// Close the connection once `data` is sent (e.g. the client said `QUIT`).
    pub close: bool,
    /// Bytes for the client, possibly none.
    pub data: Vec<u8>,
}

impl StreamOutput {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.close as u8).bytes(&self.data);
        w.0
    }

    /// Decodes the message.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        Ok(StreamOutput {
            close: r.u8()? != 0,
            data: r.bytes()?.to_vec(),
        })
    }
}
