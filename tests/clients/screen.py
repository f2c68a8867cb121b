#!/usr/bin/env python3
"""Drive netpathway.v1.ScreeningService/ScreenCohort from a generated grpcio client.

Opens --streams concurrent bidirectional streams on ONE channel (one HTTP/2 connection),
sends --patients patients on each, reads every answer and checks it: each correlation id
answered exactly once, each answer `screened` with an eligibility and a funding answer that
share one decision id and name every therapy, identical patients answered identically, and
every stream ending with status OK. While the streams run it makes --unary
EligibilityService/EvaluateEligibility calls on the same channel, which must succeed too
(an HTTP/2 GOAWAY would fail them as well as the streams).

Every 4th patient (with --mix mixed, the default) is a minimal profile of a few fields (a
message well under 100 bytes); the others are a full small-bowel NET profile (several hundred
bytes). Small messages matter: a client that sends one small DATA frame per message spends
the server's HTTP/2 DATA-frame budget while the server is not reading.

Exit code 0 only if every check passed. One summary line is printed; on failure the first
problems are printed too, with the exact gRPC status code and details.

    python screen.py --target 127.0.0.1:50051 --mode sync --streams 4 --patients 5000 \
        --view basic --unary 20 --stubs target/client-tools/python
"""

import argparse
import asyncio
import os
import sys
import threading
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="host:port of the gRPC listener")
    p.add_argument("--mode", choices=["sync", "asyncio"], default="sync")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--patients", type=int, default=5000, help="patients per stream")
    p.add_argument("--view", choices=["basic", "full"], default="basic")
    p.add_argument("--unary", type=int, default=0,
                   help="EvaluateEligibility calls made on the same channel while streaming")
    p.add_argument("--mix", choices=["mixed", "full", "minimal"], default="mixed",
                   help="mixed: every 4th patient minimal, the rest full (default)")
    p.add_argument("--stubs", help="directory holding the generated *_pb2 modules")
    p.add_argument("--timeout", type=float, default=900.0, help="deadline of each call, seconds")
    p.add_argument("--wait-ready", type=float, default=0.0,
                   help="only poll the server (health of EligibilityService via a unary call) "
                        "for up to this many seconds, then exit 0 when it answers")
    p.add_argument("--sizes", action="store_true", help="print the encoded request sizes and exit")
    return p.parse_args(argv)


ARGS = parse_args()
if ARGS.stubs:
    sys.path.insert(0, os.path.abspath(ARGS.stubs))

import grpc  # noqa: E402
from google.type import date_pb2  # noqa: E402
from netpathway.v1 import common_pb2 as common  # noqa: E402
from netpathway.v1 import eligibility_service_pb2 as elig  # noqa: E402
from netpathway.v1 import eligibility_service_pb2_grpc as elig_grpc  # noqa: E402
from netpathway.v1 import funding_service_pb2 as fund  # noqa: E402
from netpathway.v1 import patient_pb2 as pat  # noqa: E402
from netpathway.v1 import screening_service_pb2 as scr  # noqa: E402
from netpathway.v1 import screening_service_pb2_grpc as scr_grpc  # noqa: E402

VIEW = {"basic": common.EVALUATION_VIEW_BASIC, "full": common.EVALUATION_VIEW_FULL}[ARGS.view]
# Every therapy but THERAPY_UNSPECIFIED: an empty `therapies` list asks for all of them.
ALL_THERAPIES = [v.number for v in common.Therapy.DESCRIPTOR.values if v.number != 0]
MAX_PROBLEMS_SHOWN = 10
CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def d(y, m, day):
    return date_pb2.Date(year=y, month=m, day=day)


def full_patient(local_ref):
    """A metastatic, progressive, SSTR-positive G2 small-bowel NET (the README's TA539 patient,
    with the rest of the record filled in as a NET MDT would have it). No NHS number."""
    return pat.PatientProfile(
        identifiers=pat.PatientIdentifiers(local_patient_reference=local_ref),
        demographics=pat.Demographics(
            nation=common.NATION_ENGLAND, date_of_birth=d(1962, 3, 14), sex=pat.SEX_MALE),
        tumour=pat.Tumour(
            primary_site=pat.PRIMARY_SITE_JEJUNUM_ILEUM,
            differentiation=pat.DIFFERENTIATION_WELL,
            who_grade=pat.WHO_GRADE_G2,
            ki67_percent=8.0,
            mitoses_per_2mm2=2.0,
            grading_system=pat.GRADING_SYSTEM_WHO_2019,
            functional_syndrome=pat.FUNCTIONAL_SYNDROME_CARCINOID,
            symptoms_controlled_on_ssa=True,
            primary_tumour_size_mm=24.0),
        extent=pat.DiseaseExtent(
            extent=pat.EXTENT_METASTATIC,
            resectable_with_curative_intent=False,
            resectability_mdt_date=d(2026, 10, 28),
            liver_metastases=True,
            liver_burden_percent=18.0,
            liver_dominant=True,
            bilobar_liver_disease=True,
            extrahepatic_sites=[pat.EXTRAHEPATIC_SITE_LYMPH_NODES],
            estimated_debulkable_percent=60.0),
        progression=pat.Progression(
            progressive=True,
            baseline_scan_date=d(2025, 11, 3),
            progression_scan_date=d(2026, 10, 20),
            assessed_by="consultant radiologist (RECIST 1.1)",
            on_ssa_at_progression=True),
        imaging=pat.Imaging(
            sstr_modality=pat.SSTR_IMAGING_MODALITY_GA68_DOTA_PET,
            sstr_scan_date=d(2026, 10, 22),
            krenning_score=4,
            fdg_positive_sstr_negative_lesion=False,
            sstr_positive=True),
        prior_treatments=[
            pat.PriorTreatment(
                therapy=common.THERAPY_DEBULKING_SURGERY,
                start_date=d(2023, 9, 12), end_date=d(2023, 9, 12),
                best_response=pat.BEST_RESPONSE_PARTIAL),
            pat.PriorTreatment(
                therapy=common.THERAPY_SSA_LANREOTIDE,
                start_date=d(2024, 2, 1), cycles=33,
                best_response=pat.BEST_RESPONSE_STABLE),
        ],
        medication=pat.Medication(
            on_long_acting_ssa=True,
            ssa_last_dose_date=d(2026, 11, 10),
            mibg_interfering_drugs=[pat.MIBG_INTERFERING_DRUG_NONE],
            ssa_indication=pat.SSA_INDICATION_SYMPTOM_AND_TUMOUR_CONTROL),
        fitness=pat.Fitness(
            ecog_performance_status=1,
            karnofsky_performance_status=80,
            life_expectancy_months=48,
            can_follow_radiation_precautions=True,
            prior_marrow_radiotherapy_percent=0.0,
            carcinoid_heart_disease=False,
            echocardiogram_date=d(2026, 9, 15),
            uncontrolled_hypertension=False,
            lvef_percent=60.0,
            qt_prolongation_risk=False,
            child_pugh=pat.CHILD_PUGH_NOT_CIRRHOTIC,
            portal_vein_thrombosis=False,
            ascites=False,
            biliary_enteric_anastomosis=False,
            fit_for_surgery=True),
        labs=pat.LaboratoryResults(
            collected_date=d(2026, 11, 5),
            haemoglobin_g_per_l=128.0,
            platelets_10e9_per_l=240.0,
            white_cell_count_10e9_per_l=6.8,
            neutrophils_10e9_per_l=4.1,
            creatinine_umol_per_l=88.0,
            creatinine_clearance_ml_per_min=82.0,
            egfr_ml_per_min_per_1_73m2=78.0,
            on_dialysis=False,
            bilirubin_umol_per_l=9.0,
            bilirubin_upper_limit_umol_per_l=21.0,
            albumin_g_per_l=40.0,
            inr=1.0),
        mdt=pat.MdtContext(
            discussed=True, mdt=pat.MDT_NAME_LOCAL, mdt_date=d(2026, 11, 12),
            trial_or_registry_candidate=False),
    )


def minimal_patient():
    """Only nation, age, site and Ki-67: most answers come back INDETERMINATE/UNDETERMINED."""
    return pat.PatientProfile(
        demographics=pat.Demographics(nation=common.NATION_ENGLAND, age_years=64),
        tumour=pat.Tumour(primary_site=pat.PRIMARY_SITE_JEJUNUM_ILEUM, ki67_percent=8.0),
    )


MINIMAL = minimal_patient()
# A fixed as-of date keeps the answers (dated facts, scan ages) the same whatever day this runs.
AS_OF = d(2026, 12, 1)


def is_minimal(i):
    if ARGS.mix == "minimal":
        return True
    if ARGS.mix == "full":
        return False
    return i % 4 == 3


def request(stream, i):
    cid = f"s{stream}-p{i}"
    patient = MINIMAL if is_minimal(i) else full_patient("SYN-" + cid)
    return scr.ScreenCohortRequest(correlation_id=cid, patient=patient, view=VIEW, as_of_date=AS_OF)


class Results:
    """Everything the checks found; shared by the streams (guarded by a lock)."""

    def __init__(self, streams, patients):
        self.lock = threading.Lock()
        self.expected = streams * patients
        self.answered = {}  # correlation id -> count
        self.answers = 0
        self.errors = 0  # in-stream patient errors plus bad answers
        self.problems = []
        self.stream_status = {}  # stream -> (code name, details, answers on that stream)
        self.shapes = {"full": set(), "minimal": set()}
        self.unary_ok = 0
        self.unary_during = 0
        self.unary_failed = 0
        self.streams_done = threading.Event()

    def problem(self, text):
        self.problems.append(text)

    def check_answer(self, stream, resp):
        """Checks one ScreenCohortResponse; returns nothing, records problems."""
        cid = resp.correlation_id
        with self.lock:
            self.answers += 1
            n = self.answered.get(cid, 0)
            self.answered[cid] = n + 1
            if not cid.startswith(f"s{stream}-p"):
                self.errors += 1
                self.problem(f"stream {stream}: answer for another stream's or unknown id {cid!r}")
                return
            if n:
                self.errors += 1
                self.problem(f"stream {stream}: {cid} answered twice")
                return
        which = resp.WhichOneof("result")
        if which == "error":
            with self.lock:
                self.errors += 1
                self.problem(f"{cid}: in-stream error code={resp.error.code} "
                             f"({CODE_NAMES.get(resp.error.code, '?')}) message={resp.error.message!r}")
            return
        if which != "screened":
            with self.lock:
                self.errors += 1
                self.problem(f"{cid}: answer has neither screened nor error")
            return
        kind = "minimal" if is_minimal(int(cid.rsplit("-p", 1)[1])) else "full"
        bad = self.bad_screened(resp.screened) or (kind == "full" and self.not_ta539(resp.screened))
        shape = tuple((t.therapy, t.status) for t in resp.screened.eligibility.therapies) + tuple(
            (t.therapy, t.route, t.next_route_if_refused) for t in resp.screened.funding.therapies)
        with self.lock:
            if bad:
                self.errors += 1
                self.problem(f"{cid}: {bad}")
            self.shapes[kind].add(shape)

    @staticmethod
    def bad_screened(s):
        if not s.HasField("eligibility") or not s.HasField("funding"):
            return "screened answer lacks eligibility or funding"
        e, f = s.eligibility, s.funding
        if not e.decision_id or e.decision_id != f.decision_id:
            return f"decision ids differ or are empty ({e.decision_id!r} vs {f.decision_id!r})"
        if [t.therapy for t in e.therapies] != ALL_THERAPIES:
            return f"eligibility names {len(e.therapies)} therapies, not all {len(ALL_THERAPIES)} in order"
        if [t.therapy for t in f.therapies] != ALL_THERAPIES:
            return f"funding names {len(f.therapies)} therapies, not all {len(ALL_THERAPIES)} in order"
        if any(t.status == 0 for t in e.therapies):
            return "an eligibility status is UNSPECIFIED"
        if any(t.route == 0 for t in f.therapies):
            return "a funding route is UNSPECIFIED"
        if not e.policy.content_hash.startswith("sha256:"):
            return "eligibility names no policy content hash"
        if VIEW == common.EVALUATION_VIEW_FULL:
            if not all(t.summary and len(t.criteria) > 0 for t in e.therapies):
                return "FULL eligibility answer lacks a summary or criteria"
            if not all(t.summary for t in f.therapies):
                return "FULL funding answer lacks a summary"
        else:
            if any(t.summary or t.criteria for t in e.therapies):
                return "BASIC eligibility answer carries FULL-only fields"
        return None

    @staticmethod
    def not_ta539(s):
        """The full patient is the README's TA539 case: Lu-177 eligible and NICE-funded."""
        lu = common.THERAPY_PRRT_LU177_DOTATATE
        status = [t.status for t in s.eligibility.therapies if t.therapy == lu]
        route = [t.route for t in s.funding.therapies if t.therapy == lu]
        if status != [elig.ELIGIBILITY_STATUS_ELIGIBLE]:
            return f"full patient: Lu-177 status {status}, expected ELIGIBLE"
        if route != [fund.FUNDING_ROUTE_ROUTINELY_COMMISSIONED_NICE_TA]:
            return f"full patient: Lu-177 route {route}, expected ROUTINELY_COMMISSIONED_NICE_TA"
        return None

    def finish(self):
        missing = [f"s{s}-p{i}" for s in range(ARGS.streams) for i in range(ARGS.patients)
                   if f"s{s}-p{i}" not in self.answered]
        if missing:
            self.problem(f"{len(missing)} patients never answered, first: {missing[:5]}")
        for kind, shapes in self.shapes.items():
            if len(shapes) > 1:
                self.problem(f"identical {kind} patients got {len(shapes)} different answers")
        for s in range(ARGS.streams):
            code, details, n = self.stream_status.get(s, ("NO_STATUS", "stream never finished", 0))
            if code != "OK":
                self.problem(f"stream {s} ended {code} details={details!r} after {n} answers on it")
        if self.unary_failed or self.unary_ok != ARGS.unary:
            self.problem(f"unary calls: {self.unary_ok} ok, {self.unary_failed} failed of {ARGS.unary}")
        return not self.problems and self.errors == 0 and not missing


def unary_request(k):
    return elig.EvaluateEligibilityRequest(
        patient=full_patient(f"SYN-unary-{k}"),
        therapies=[common.THERAPY_PRRT_LU177_DOTATATE],
        as_of_date=AS_OF,
        view=common.EVALUATION_VIEW_BASIC)


def check_unary(res, k, resp):
    ok = bool(resp.decision_id) and [(t.therapy, t.status) for t in resp.therapies] == [
        (common.THERAPY_PRRT_LU177_DOTATATE, elig.ELIGIBILITY_STATUS_ELIGIBLE)]
    with res.lock:
        if ok:
            res.unary_ok += 1
            if not res.streams_done.is_set():
                res.unary_during += 1
        else:
            res.unary_failed += 1
            res.problem(f"unary {k}: unexpected answer {resp}")


def unary_failed(res, k, err):
    with res.lock:
        res.unary_failed += 1
        res.problem(f"unary {k}: {err.code().name} details={err.details()!r}")


def unary_due(res, k):
    """Spread the unary calls over the streaming run: call k once this share is answered."""
    return res.answers >= (k + 1) * res.expected // (ARGS.unary + 1) or res.streams_done.is_set()


# ---------------------------------------------------------------- sync (threads)

def run_sync(res):
    with grpc.insecure_channel(ARGS.target) as channel:
        screening = scr_grpc.ScreeningServiceStub(channel)
        eligibility = elig_grpc.EligibilityServiceStub(channel)

        def one_stream(s):
            n = 0
            call = screening.ScreenCohort((request(s, i) for i in range(ARGS.patients)),
                                          timeout=ARGS.timeout)
            try:
                for resp in call:
                    n += 1
                    res.check_answer(s, resp)
                res.stream_status[s] = (call.code().name, call.details(), n)
            except grpc.RpcError as err:
                res.stream_status[s] = (err.code().name, err.details(), n)

        def unaries():
            for k in range(ARGS.unary):
                while not unary_due(res, k):
                    time.sleep(0.01)
                try:
                    check_unary(res, k, eligibility.EvaluateEligibility(unary_request(k), timeout=60))
                except grpc.RpcError as err:
                    unary_failed(res, k, err)

        threads = [threading.Thread(target=one_stream, args=(s,)) for s in range(ARGS.streams)]
        u = threading.Thread(target=unaries)
        for t in threads:
            t.start()
        u.start()
        for t in threads:
            t.join()
        res.streams_done.set()
        u.join()


# ---------------------------------------------------------------- asyncio (grpc.aio)

async def run_asyncio(res):
    async with grpc.aio.insecure_channel(ARGS.target) as channel:
        screening = scr_grpc.ScreeningServiceStub(channel)
        eligibility = elig_grpc.EligibilityServiceStub(channel)

        async def requests(s):
            for i in range(ARGS.patients):
                yield request(s, i)

        async def one_stream(s):
            n = 0
            call = screening.ScreenCohort(requests(s), timeout=ARGS.timeout)
            try:
                async for resp in call:
                    n += 1
                    res.check_answer(s, resp)
                res.stream_status[s] = ((await call.code()).name, await call.details(), n)
            except grpc.RpcError as err:
                res.stream_status[s] = (err.code().name, err.details(), n)

        async def unaries():
            for k in range(ARGS.unary):
                while not unary_due(res, k):
                    await asyncio.sleep(0.01)
                try:
                    check_unary(res, k, await eligibility.EvaluateEligibility(
                        unary_request(k), timeout=60))
                except grpc.RpcError as err:
                    unary_failed(res, k, err)

        u = asyncio.create_task(unaries())
        await asyncio.gather(*(one_stream(s) for s in range(ARGS.streams)))
        res.streams_done.set()
        await u


def wait_ready():
    deadline = time.monotonic() + ARGS.wait_ready
    last = None
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(ARGS.target) as channel:
                grpc.channel_ready_future(channel).result(timeout=1)
                elig_grpc.EligibilityServiceStub(channel).EvaluateEligibility(
                    elig.EvaluateEligibilityRequest(patient=MINIMAL, view=common.EVALUATION_VIEW_BASIC,
                                                    therapies=[common.THERAPY_SSA_OCTREOTIDE]),
                    timeout=5)
            print(f"server at {ARGS.target} answers")
            return 0
        except (grpc.RpcError, grpc.FutureTimeoutError) as err:
            last = err
            time.sleep(0.1)
    print(f"server at {ARGS.target} did not answer within {ARGS.wait_ready}s: {last}")
    return 1


def main():
    if ARGS.sizes:
        for label, req in (
                ("full", scr.ScreenCohortRequest(correlation_id="s0-p0", patient=full_patient("SYN-s0-p0"),
                                                 view=VIEW, as_of_date=AS_OF)),
                ("minimal", scr.ScreenCohortRequest(correlation_id="s0-p3", patient=MINIMAL,
                                                    view=VIEW, as_of_date=AS_OF))):
            print(f"{label}: ScreenCohortRequest {req.ByteSize()} bytes "
                  f"(patient {req.patient.ByteSize()} bytes), gRPC message with prefix {req.ByteSize() + 5}")
        return 0
    if ARGS.wait_ready:
        return wait_ready()
    res = Results(ARGS.streams, ARGS.patients)
    start = time.monotonic()
    if ARGS.mode == "sync":
        run_sync(res)
    else:
        asyncio.run(run_asyncio(res))
    seconds = time.monotonic() - start
    ok = res.finish()
    print(f"screen.py mode={ARGS.mode} view={ARGS.view} mix={ARGS.mix} streams={ARGS.streams} "
          f"patients={ARGS.patients} expected={res.expected} answers={res.answers} "
          f"unique={len(res.answered)} errors={res.errors} "
          f"unary={res.unary_ok}/{ARGS.unary} (during streams {res.unary_during}) "
          f"seconds={seconds:.1f} result={'PASS' if ok else 'FAIL'}")
    if not ok:
        for s in sorted(res.stream_status):
            code, details, n = res.stream_status[s]
            print(f"  stream {s}: status {code} details={details!r} answers={n}")
        for p in res.problems[:MAX_PROBLEMS_SHOWN]:
            print("  " + p)
        if len(res.problems) > MAX_PROBLEMS_SHOWN:
            print(f"  ... {len(res.problems) - MAX_PROBLEMS_SHOWN} more problems")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
