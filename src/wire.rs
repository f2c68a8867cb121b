//! The gRPC codec of every net-pathway service and client: prost's encoding and decoding, except
//! that an answer listing therapies (eligibility, funding, a screened patient's) writes its
//! nested messages itself, and the decision log records answers the same way.
//!
//! prost writes a nested message by working out its length first, and works out each
//! enclosing message's length from its fields' lengths again: in a FULL answer every citation's
//! length three times and every criterion's twice, and in a screened patient's answer every
//! therapy's four times. Here an explained therapy, each of its criteria, and a screened
//! patient's answers are written into a buffer first and their length is the bytes written;
//! copying the bytes costs less than measuring them again. A BASIC therapy, a few bytes, is
//! prost's own. Room for a FULL answer is made before it is written, so that the buffer is not
//! grown and copied as it fills (about 440 bytes a criterion). The bytes decode to the same
//! message (tests below, and every test over the socket); protobuf parsers accept fields in any
//! order, and here the therapies follow the answer's other fields and the criteria the
//! therapy's. The rest of each message is prost's own.

use std::marker::PhantomData;

use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{WireType, encode_key, encode_varint};
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
        Decoder {
            decoded: 0,
            message: PhantomData,
        }
    }
}

/// Reads messages with prost, from one slice of the message's bytes.
///
/// tonic hands the decoder a view of its receive buffer; prost reading through that view moves
/// the buffer itself at every varint and field (about 60 moves for a patient). tonic buffers a
/// message whole before decoding it, so its bytes are one slice: prost reads the slice, and the
/// buffer moves once, past the message.
///
/// A unary call carries exactly one request message (gRPC over HTTP/2); tonic reads to the end
/// of a unary request and would drop a second one unseen, so the decoder refuses it.
#[derive(Debug)]
pub struct Decoder<U> {
    decoded: u32,
    message: PhantomData<U>,
}

/// Whether `U` is the request of a unary RPC: every request but the screening stream's.
fn is_unary_request<U>() -> bool {
    let name = std::any::type_name::<U>();
    name.ends_with("Request") && !name.ends_with("::ScreenCohortRequest")
}

impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.decoded = self.decoded.saturating_add(1);
        if self.decoded > 1 && is_unary_request::<U>() {
            return Err(Status::invalid_argument(
                "a unary call carries one request message; this call carried more",
            ));
        }
        let length = buf.remaining();
        let message = if buf.chunk().len() == length {
            let message = U::decode(buf.chunk());
            buf.advance(length);
            message
        } else {
            // Not one slice (no tonic today): prost reads through the view.
            U::decode(&mut *buf)
        };
        // A request that does not parse is the caller's to mend: INVALID_ARGUMENT. An answer
        // that does not parse (this codec also serves the client) is INTERNAL, as in tonic's own
        // decoder. buf lint (STANDARD) names every request message `<Rpc>Request`.
        message.map(Some).map_err(|e| {
            if std::any::type_name::<U>().ends_with("Request") {
                Status::invalid_argument(format!("the request does not parse: {e}"))
            } else {
                Status::internal(e.to_string())
            }
        })
    }
}

/// A message as written on the wire.
pub trait Encode: Message + Send + Sized + 'static {
    /// Writes the message's fields; prost's encoding unless the message says otherwise.
    fn write(self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        self.encode(buf)
    }

    /// Bytes to make room for before writing: a FULL answer's, so that its buffer is not grown
    /// and copied again and again as it is written. 0 when prost's encoding works it out.
    fn room(&self) -> usize {
        0
    }
}

/// Writes messages with [`Encode::write`].
#[derive(Debug)]
pub struct Encoder<T>(PhantomData<T>);

impl<T: Encode> tonic::codec::Encoder for Encoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.room());
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
    fn write(mut self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        write_answer(&mut self, buf);
        Ok(())
    }

    fn room(&self) -> usize {
        room(&self.therapies)
    }
}

impl Encode for pb::ClassifyFundingResponse {
    fn write(mut self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        write_answer(&mut self, buf);
        Ok(())
    }

    fn room(&self) -> usize {
        room(&self.therapies)
    }
}

/// Room for an answer's therapies: in the bundled policy's answers a criterion with its
/// citation is about 440 bytes, a BASIC therapy under 48 (docs/performance.md).
pub fn room<T: Explained>(therapies: &[T]) -> usize {
    const PER_THERAPY: usize = 48;
    therapies.len() * PER_THERAPY + room_for(therapies.iter().map(Explained::criteria_count).sum())
}

/// Room for `criteria` criteria, 512 bytes each, so that the buffer rarely grows.
fn room_for(criteria: usize) -> usize {
    const PER_CRITERION: usize = 512;
    criteria * PER_CRITERION
}

impl Encode for pb::ScreenCohortResponse {
    fn room(&self) -> usize {
        match &self.result {
            Some(pb::screen_cohort_response::Result::Screened(screened)) => screened_room(screened),
            _ => 0,
        }
    }

    fn write(mut self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        let mut screened = match self.result.take() {
            Some(pb::screen_cohort_response::Result::Screened(screened)) => screened,
            refused => {
                self.result = refused;
                return self.encode(buf);
            }
        };
        self.encode(buf)?;
        // ScreenCohortResponse { correlation_id = 1, screened = 2 }.
        write_screened(2, &mut screened, buf);
        Ok(())
    }
}

/// Room for a screened patient's answers (see [`room`]).
pub fn screened_room(screened: &pb::ScreeningResult) -> usize {
    screened
        .eligibility
        .as_ref()
        .map_or(0, |e| room(&e.therapies))
        + screened.funding.as_ref().map_or(0, |f| room(&f.therapies))
}

/// Writes a screened patient's answers as field `tag` of the message being written into `buf`
/// (ScreenCohortResponse.screened, or a decision record's screening result); they are left as
/// they were.
pub fn write_screened(tag: u32, screened: &mut pb::ScreeningResult, buf: &mut impl BufMut) {
    let whole = screened_room(screened);
    // ScreeningResult { eligibility = 1, funding = 2 }: named whole, so a field added to it
    // cannot be left out unnoticed.
    let pb::ScreeningResult {
        eligibility,
        funding,
    } = screened;
    let (mut result, mut answer, mut below) = (Vec::new(), Vec::new(), Bodies::default());
    measured(tag, &mut result, whole, buf, |result| {
        if let Some(e) = eligibility {
            write_answer_as(1, e, &mut answer, &mut below, result);
        }
        if let Some(f) = funding {
            write_answer_as(2, f, &mut answer, &mut below, result);
        }
    });
}

/// Writes `answer` (an eligibility or funding answer) as the fields of a message, each
/// explained therapy's criteria measured by writing them; the answer is left as it was. The
/// decision log records answers with it too.
pub fn write_answer<A: TherapyList>(answer: &mut A, buf: &mut impl BufMut) {
    write_answer_with(answer, buf, &mut Bodies::default());
}

/// Writes `answer` as field `tag` of the message being written into `buf`.
pub fn write_nested_answer<A: TherapyList>(tag: u32, answer: &mut A, buf: &mut impl BufMut) {
    write_answer_as(tag, answer, &mut Vec::new(), &mut Bodies::default(), buf);
}

/// Writes `answer` as field `tag` of the message being written into `buf`, through `body`.
fn write_answer_as<A: TherapyList>(
    tag: u32,
    answer: &mut A,
    body: &mut Vec<u8>,
    below: &mut Bodies,
    buf: &mut impl BufMut,
) {
    let whole = room(answer.therapies());
    measured(tag, body, whole, buf, |body| {
        write_answer_with(answer, body, below)
    });
}

fn write_answer_with<A: TherapyList>(answer: &mut A, buf: &mut impl BufMut, bodies: &mut Bodies) {
    let mut therapies = std::mem::take(answer.therapies());
    answer.encode_raw(buf);
    for therapy in &mut therapies {
        write_therapy(therapy, bodies, buf);
    }
    *answer.therapies() = therapies;
}

/// Buffers for an explained therapy and one of its criteria, written before their length is
/// known; reused from one therapy, and one criterion, to the next.
#[derive(Default)]
struct Bodies {
    therapy: Vec<u8>,
    criterion: Vec<u8>,
}

/// Writes field `tag` as a nested message whose fields `fields` writes: into `body` first, so
/// that its length is the bytes written rather than worked out beforehand. prost works out a
/// nested message's length again at every level above it: a FULL answer's citations three
/// times each, its criteria twice (docs/performance.md). Copying the bytes costs less. Room
/// for `room` bytes is made first (see [`room`]), so that `body` is not grown as it fills.
fn measured<B: BufMut>(
    tag: u32,
    body: &mut Vec<u8>,
    room: usize,
    buf: &mut B,
    fields: impl FnOnce(&mut Vec<u8>),
) {
    body.clear();
    body.reserve(room);
    fields(body);
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(body.len() as u64, buf);
    buf.put_slice(body);
}

/// An answer whose therapies are field 5 (`therapies = 5` in EvaluateEligibilityResponse and
/// ClassifyFundingResponse).
pub trait TherapyList: Message + Sized {
    type Therapy: Explained;
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

/// A therapy's answer, whose criteria (FULL view only) are most of its bytes.
pub trait Explained: Message + Sized {
    /// The field number of `criteria`.
    const CRITERIA: u32;
    fn criteria(&mut self) -> &mut Vec<pb::CriterionResult>;
    fn criteria_count(&self) -> usize;
}

impl Explained for pb::TherapyEligibility {
    const CRITERIA: u32 = 4;
    fn criteria(&mut self) -> &mut Vec<pb::CriterionResult> {
        &mut self.criteria
    }
    fn criteria_count(&self) -> usize {
        self.criteria.len()
    }
}

impl Explained for pb::TherapyFunding {
    const CRITERIA: u32 = 9;
    fn criteria(&mut self) -> &mut Vec<pb::CriterionResult> {
        &mut self.criteria
    }
    fn criteria_count(&self) -> usize {
        self.criteria.len()
    }
}

/// Writes a therapy as field 5 of its answer; the therapy is left as it was. A BASIC therapy
/// (a few bytes, no criteria) is prost's own; an explained one has its criteria measured.
fn write_therapy<T: Explained>(therapy: &mut T, bodies: &mut Bodies, buf: &mut impl BufMut) {
    if therapy.criteria().is_empty() {
        encode_key(THERAPIES, WireType::LengthDelimited, buf);
        encode_varint(therapy.encoded_len() as u64, buf);
        therapy.encode_raw(buf);
        return;
    }
    let criteria = std::mem::take(therapy.criteria());
    let Bodies {
        therapy: body,
        criterion,
    } = bodies;
    measured(THERAPIES, body, room_for(criteria.len()), buf, |body| {
        therapy.encode_raw(body);
        for c in &criteria {
            // One criterion, a few hundred bytes, in a buffer kept from the criterion before.
            measured(T::CRITERIA, criterion, 0, body, |criterion| {
                c.encode_raw(criterion)
            });
        }
    });
    *therapy.criteria() = criteria;
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::{Encode, write_answer, write_screened};
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

    /// The decision log writes an answer it then returns: writing must leave it whole.
    fn written_in_place<M: super::TherapyList + Clone + PartialEq>(answer: &M) -> Vec<u8> {
        let mut kept = answer.clone();
        let mut buf = Vec::new();
        write_answer(&mut kept, &mut buf);
        assert!(kept == *answer, "writing changed the answer");
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
                    patient: Box::new(case.patient.clone()),
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
                assert_eq!(bytes, written_in_place(&eligibility));
                assert_eq!(bytes.len(), eligibility.encoded_len());
                assert_eq!(
                    pb::EvaluateEligibilityResponse::decode(&bytes[..]),
                    Ok(eligibility.clone())
                );

                let bytes = written(&funding);
                assert_eq!(bytes, written_in_place(&funding));
                assert_eq!(bytes.len(), funding.encoded_len());
                assert_eq!(
                    pb::ClassifyFundingResponse::decode(&bytes[..]),
                    Ok(funding.clone())
                );

                let result = pb::ScreeningResult {
                    eligibility: Some(eligibility),
                    funding: Some(funding),
                };
                // As the decision log records it: field 15 of a record, the result left whole.
                let mut kept = result.clone();
                let mut record = Vec::new();
                write_screened(15, &mut kept, &mut record);
                assert_eq!(kept, result);
                assert_eq!(
                    pb::DecisionRecord::decode(&record[..]).map(|r| r.response),
                    Ok(Some(pb::decision_record::Response::ScreeningResult(
                        result.clone()
                    )))
                );
                let screened = pb::ScreenCohortResponse {
                    correlation_id: "patient 7".into(),
                    result: Some(pb::screen_cohort_response::Result::Screened(result)),
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
