//! The gRPC codec of every net-pathway service and client: prost's encoding and decoding, except
//! that an answer listing therapies writes its therapies itself.
//!
//! prost writes a nested message by working out its length, and works out each enclosing
//! message's length from its fields' lengths again, so a therapy's length is worked out once per
//! level above it: twice in a unary answer, four times in a screened patient's. Here it is
//! worked out once as the therapy is written, and once more for the enclosing lengths of a
//! screened patient's answer (14 therapies, 2 answers: 6 % of a screened patient's
//! instructions, docs/performance.md). The rest of each message is prost's own. The bytes
//! decode to the same message (tests below, and every test over the socket); the therapies
//! follow the answer's other fields rather than coming between `as_of_date` and `derived`, and
//! protobuf parsers accept fields in any order.

use std::marker::PhantomData;

use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;
use tonic::codec::{DecodeBuf, EncodeBuf};

use crate::pb;

/// The codec the generated services and clients use (build.rs `codec_path`).
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T: Encode, U: Message + Default + Send + 'static> tonic::codec::Codec for Codec<T, U> {
    type Encode = T;
    type Decode = U;
    type Encoder = Encoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Encoder<T> {
        Encoder(PhantomData)
    }

    fn decoder(&mut self) -> Decoder<U> {
        Decoder(PhantomData)
    }
}

/// Reads messages with prost, from one slice of the message's bytes.
///
/// tonic hands the decoder a view of its receive buffer; prost reading through that view moves
/// the buffer itself at every varint and field (about 60 moves for a patient). tonic buffers a
/// message whole before decoding it, so its bytes are one slice: prost reads the slice, and the
/// buffer moves once, past the message.
#[derive(Debug)]
pub struct Decoder<U>(PhantomData<U>);

impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let length = buf.remaining();
        let message = if buf.chunk().len() == length {
            let message = U::decode(buf.chunk());
            buf.advance(length);
            message
        } else {
            // Not one slice (no tonic today): prost reads through the view.
            U::decode(&mut *buf)
        };
        // As tonic's own decoder: a message that does not parse is INTERNAL (gRPC status codes).
        message
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// A message as written on the wire.
pub trait Encode: Message + Send + Sized + 'static {
    /// Writes the message's fields; prost's encoding unless the message says otherwise.
    fn write(self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        self.encode(buf)
    }
}

/// Writes messages with [`Encode::write`].
#[derive(Debug)]
pub struct Encoder<T>(PhantomData<T>);

impl<T: Encode> tonic::codec::Encoder for Encoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // EncodeBuf grows as it is written, so prost's "not enough space" cannot arise.
        item.write(buf)
            .map_err(|e| Status::internal(format!("the message could not be encoded: {e}")))
    }
}

macro_rules! prost_encoded {
    ($($message:ty),* $(,)?) => { $(impl Encode for $message {})* };
}

prost_encoded!(
    pb::EvaluateEligibilityRequest,
    pb::ClassifyFundingRequest,
    pb::ScreenCohortRequest,
    pb::GetActivePolicyRequest,
    pb::GetActivePolicyResponse,
    pb::GetDecisionRequest,
    pb::GetDecisionResponse,
    pb::ListDecisionsRequest,
    pb::ListDecisionsResponse,
    pb::ReplayDecisionRequest,
    pb::ReplayDecisionResponse,
    pb::EnrolPatientRequest,
    pb::EnrolPatientResponse,
    pb::RecordPriorAgreementRequest,
    pb::RecordPriorAgreementResponse,
    pb::GetEnrolmentRequest,
    pb::GetEnrolmentResponse,
    pb::ListEnrolmentsRequest,
    pb::ListEnrolmentsResponse,
    pb::WithdrawEnrolmentRequest,
    pb::WithdrawEnrolmentResponse,
);

impl Encode for pb::EvaluateEligibilityResponse {
    fn write(self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        Listed::new(self).write_fields(buf)
    }
}

impl Encode for pb::ClassifyFundingResponse {
    fn write(self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        Listed::new(self).write_fields(buf)
    }
}

impl Encode for pb::ScreenCohortResponse {
    fn write(mut self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        let screened = match self.result.take() {
            Some(pb::screen_cohort_response::Result::Screened(screened)) => screened,
            refused => {
                self.result = refused;
                return self.encode(buf);
            }
        };
        // ScreenCohortResponse { correlation_id = 1, screened = 2 { eligibility = 1, funding = 2 } };
        // named whole, so a field added to ScreeningResult cannot be left out unnoticed.
        let pb::ScreeningResult {
            eligibility,
            funding,
        } = screened;
        let eligibility = eligibility.map(|e| {
            let e = Listed::new(e);
            (e.len(), e)
        });
        let funding = funding.map(|f| {
            let f = Listed::new(f);
            (f.len(), f)
        });
        let len = eligibility
            .as_ref()
            .map_or(0, |(len, _)| nested_len(1, *len))
            + funding.as_ref().map_or(0, |(len, _)| nested_len(2, *len));
        self.encode(buf)?;
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        if let Some((len, e)) = eligibility {
            e.write_nested(1, len, buf)?;
        }
        if let Some((len, f)) = funding {
            f.write_nested(2, len, buf)?;
        }
        Ok(())
    }
}

/// An answer whose therapies are field 5 (`therapies = 5` in EvaluateEligibilityResponse and
/// ClassifyFundingResponse).
trait TherapyList: Message + Sized {
    type Therapy: Message;
    fn therapies(&mut self) -> &mut Vec<Self::Therapy>;
}

const THERAPIES: u32 = 5;

impl TherapyList for pb::EvaluateEligibilityResponse {
    type Therapy = pb::TherapyEligibility;
    fn therapies(&mut self) -> &mut Vec<pb::TherapyEligibility> {
        &mut self.therapies
    }
}

impl TherapyList for pb::ClassifyFundingResponse {
    type Therapy = pb::TherapyFunding;
    fn therapies(&mut self) -> &mut Vec<pb::TherapyFunding> {
        &mut self.therapies
    }
}

/// An answer split into its therapies and the rest of its fields.
struct Listed<A: TherapyList> {
    rest: A,
    therapies: Vec<A::Therapy>,
}

impl<A: TherapyList> Listed<A> {
    fn new(mut answer: A) -> Self {
        let therapies = std::mem::take(answer.therapies());
        Listed {
            rest: answer,
            therapies,
        }
    }

    /// The length of the answer's fields.
    fn len(&self) -> usize {
        self.rest.encoded_len()
            + self
                .therapies
                .iter()
                .map(|t| nested_len(THERAPIES, t.encoded_len()))
                .sum::<usize>()
    }

    fn write_fields(self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        self.rest.encode(buf)?;
        // Borrowed: moving each therapy out of the list copies it whole.
        for therapy in &self.therapies {
            encode_key(THERAPIES, WireType::LengthDelimited, buf);
            therapy.encode_length_delimited(buf)?;
        }
        Ok(())
    }

    /// Writes the answer as field `tag` of an enclosing message; `len` is [`Listed::len`].
    fn write_nested(
        self,
        tag: u32,
        len: usize,
        buf: &mut impl BufMut,
    ) -> Result<(), prost::EncodeError> {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        self.write_fields(buf)
    }
}

/// The length of a message of `len` bytes written as field `tag` of an enclosing message.
fn nested_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use prost::Message;

    use super::Encode;
    use crate::api::{Evaluation, eligibility, funding};
    use crate::domain::Therapy;
    use crate::engine::Policy;
    use crate::pb;

    fn written<M: Encode + Clone>(message: &M) -> Vec<u8> {
        let mut buf = Vec::new();
        let written = message.clone().write(&mut buf);
        assert!(written.is_ok(), "{written:?}");
        buf
    }

    /// Every answer the bundled policy gives its own example patients, both views: each decodes
    /// from these bytes to the answer itself, at the length prost gives it, alone and screened.
    #[test]
    fn answers_decode_to_themselves() {
        let policy = match Policy::bundled() {
            Ok(p) => p,
            Err(e) => panic!("the bundled policy does not load: {e}"),
        };
        let mut checked = 0;
        for case in &policy.cases {
            for full in [false, true] {
                let e = Evaluation {
                    request_id: "req-1".into(),
                    patient: case.patient.clone(),
                    therapies: Therapy::ALL.to_vec(),
                    as_of: case.as_of,
                    full,
                    pseudonym: None,
                };
                let facts = policy.facts(&e.patient, e.as_of, e.detail());
                let eligibility = eligibility::answer(&policy, &facts, &e, "d-1".into());
                let funding = funding::answer(&policy, &facts, &e, "d-1".into());
                assert_eq!(eligibility.therapies.len(), Therapy::ALL.len());

                let bytes = written(&eligibility);
                assert_eq!(bytes.len(), eligibility.encoded_len());
                assert_eq!(
                    pb::EvaluateEligibilityResponse::decode(&bytes[..]),
                    Ok(eligibility.clone())
                );

                let bytes = written(&funding);
                assert_eq!(bytes.len(), funding.encoded_len());
                assert_eq!(
                    pb::ClassifyFundingResponse::decode(&bytes[..]),
                    Ok(funding.clone())
                );

                let screened = pb::ScreenCohortResponse {
                    correlation_id: "patient 7".into(),
                    result: Some(pb::screen_cohort_response::Result::Screened(
                        pb::ScreeningResult {
                            eligibility: Some(eligibility),
                            funding: Some(funding),
                        },
                    )),
                };
                let bytes = written(&screened);
                assert_eq!(bytes.len(), screened.encoded_len());
                assert_eq!(pb::ScreenCohortResponse::decode(&bytes[..]), Ok(screened));
                checked += 1;
            }
        }
        assert!(checked >= 12, "only {checked} answers checked");
    }

    /// A patient refused in the stream, and a screened answer missing either part.
    #[test]
    fn refusals_and_partial_answers_decode_to_themselves() {
        let refused = pb::ScreenCohortResponse {
            correlation_id: "patient 8".into(),
            result: Some(pb::screen_cohort_response::Result::Error(
                tonic_types::pb::Status {
                    code: 3,
                    message: "the patient is not valid".into(),
                    details: Vec::new(),
                },
            )),
        };
        let funding_only = pb::ScreenCohortResponse {
            correlation_id: String::new(),
            result: Some(pb::screen_cohort_response::Result::Screened(
                pb::ScreeningResult {
                    eligibility: None,
                    funding: Some(pb::ClassifyFundingResponse {
                        decision_id: "d-2".into(),
                        therapies: vec![pb::TherapyFunding {
                            route_id: "lu177-gep-nice".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
            )),
        };
        let nothing = pb::ScreenCohortResponse::default();
        for answer in [refused, funding_only, nothing] {
            let bytes = written(&answer);
            assert_eq!(bytes.len(), answer.encoded_len());
            assert_eq!(pb::ScreenCohortResponse::decode(&bytes[..]), Ok(answer));
        }
    }
}
