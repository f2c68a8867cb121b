//! The gRPC codec of every net-pathway service: tonic-prost's, with two rules of the contract
//! added on the reading side. A request that does not parse is INVALID_ARGUMENT (the caller's to
//! mend), where tonic-prost answers INTERNAL; and a unary call carries exactly one request
//! message (gRPC over HTTP/2): tonic reads to the end of a unary request and would drop a second
//! one unseen, so the decoder refuses it.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::DecodeBuf;
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::errors::{Reason, error};

/// The codec the generated services use (build.rs `codec_path`).
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> ProstEncoder<T> {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Decoder<U> {
        Decoder {
            prost: ProstDecoder::default(),
            decoded: 0,
        }
    }
}

/// tonic-prost's decoder, counting the messages of a call.
#[derive(Debug)]
pub struct Decoder<U> {
    prost: ProstDecoder<U>,
    decoded: u32,
}

/// Whether `U` is the request of a unary RPC: every request but the screening stream's. buf lint
/// (STANDARD) names every request message `<Rpc>Request`.
fn is_unary_request<U>() -> bool {
    is_request::<U>() && !std::any::type_name::<U>().ends_with("::ScreenCohortRequest")
}

fn is_request<U>() -> bool {
    std::any::type_name::<U>().ends_with("Request")
}

impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.decoded = self.decoded.saturating_add(1);
        if self.decoded > 1 && is_unary_request::<U>() {
            return Err(error(
                Reason::MoreThanOneMessage,
                "a unary call carries one request message; this call carried more",
            ));
        }
        self.prost.decode(buf).map_err(|status| {
            if is_request::<U>() {
                error(
                    Reason::MalformedRequest,
                    format!("the request does not parse: {}", status.message()),
                )
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.prost.buffer_settings()
    }
}
