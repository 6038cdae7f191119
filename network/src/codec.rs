//! Wire format of the request-response protocols: one length-prefixed frame per stream
//! direction. The length is checked against the limit before anything is allocated.
// Lengths come from peers: no arithmetic on them may wrap or panic.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};

/// Frame = u32 big-endian length, then that many bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameCodec {
    /// Largest request body accepted or sent.
    pub max_request: usize,
    /// Largest response body accepted or sent.
    pub max_response: usize,
}

/// An inbound request as read off the wire. Bad requests are surfaced (not turned into I/O
/// errors, which libp2p would swallow) so the event loop can count and penalise the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A well-formed request within the limit.
    Data(Vec<u8>),
    /// The length prefix announced this many bytes, over the limit; the body was not read.
    Oversized(usize),
    /// The stream ended before the announced body did.
    Truncated,
}

/// Marker carried in the `io::Error` of a frame over its limit, so the event loop can count it
/// apart from other I/O failures.
pub(crate) const OVERSIZED: &str = "frame exceeds size limit";

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, limit: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, OVERSIZED));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn read_request_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
) -> io::Result<Frame> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Ok(Frame::Oversized(len));
    }
    let mut buf = vec![0u8; len];
    match io.read_exact(&mut buf).await {
        Ok(()) => Ok(Frame::Data(buf)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Frame::Truncated),
        Err(e) => Err(e),
    }
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    data: &[u8],
    limit: usize,
) -> io::Result<()> {
    let len = u32::try_from(data.len())
        .ok()
        .filter(|_| data.len() <= limit)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, OVERSIZED))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_request_frame(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Frame::Data(data) => write_frame(io, &data, self.max_request).await,
            Frame::Oversized(_) | Frame::Truncated => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only data frames are sent",
            )),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.max_response).await
    }
}

/// True when `err` is the codec's "frame over the limit" error.
pub(crate) fn is_oversized(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.to_string() == OVERSIZED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[tokio::test]
    async fn frame_round_trip_and_limits() {
        let mut buf = Cursor::new(Vec::new());
        write_frame(&mut buf, b"hello", 16).await.unwrap();
        let bytes = buf.into_inner();
        assert_eq!(&bytes[..4], &5u32.to_be_bytes());
        assert_eq!(
            read_frame(&mut Cursor::new(bytes.clone()), 16)
                .await
                .unwrap(),
            b"hello"
        );
        let err = read_frame(&mut Cursor::new(bytes), 4).await.unwrap_err();
        assert!(is_oversized(&err));
        let mut out = Cursor::new(Vec::new());
        assert!(is_oversized(
            &write_frame(&mut out, &[0u8; 17], 16).await.unwrap_err()
        ));
    }

    #[tokio::test]
    async fn truncated_or_lying_frames_are_errors_not_panics() {
        // Claims 4 GiB, carries 3 bytes: refused by the limit before any allocation.
        let lying = vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert!(is_oversized(
            &read_frame(&mut Cursor::new(lying), 1024).await.unwrap_err()
        ));
        // Claims 10 bytes, carries 3: an I/O error.
        let short = vec![0, 0, 0, 10, 1, 2, 3];
        assert!(read_frame(&mut Cursor::new(short), 1024).await.is_err());
        assert!(read_frame(&mut Cursor::new(vec![0, 1]), 1024)
            .await
            .is_err());
    }

    proptest::proptest! {
        // Cases: proptest's default (256) or PROPTEST_CASES.
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Any bytes a peer sends: a frame within the limit, an `Oversized` or `Truncated`
        /// request, or an error; never a panic, never a frame over the limit.
        #[test]
        fn arbitrary_streams_never_panic_or_exceed_the_limit(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            limit in 0usize..256,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                if let Ok(frame) = read_frame(&mut Cursor::new(bytes.clone()), limit).await {
                    assert!(frame.len() <= limit);
                }
                if let Ok(Frame::Data(d)) = read_request_frame(&mut Cursor::new(bytes), limit).await {
                    assert!(d.len() <= limit);
                }
            });
        }
    }
}
