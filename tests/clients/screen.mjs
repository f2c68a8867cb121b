#!/usr/bin/env node
// Drives netpathway.v1.ScreeningService/ScreenCohort from @grpc/grpc-js, with the protos in
// proto/ loaded by @grpc/proto-loader (keepCase: true: see README.md beside this file).
//
// Opens --streams concurrent bidirectional streams on ONE channel (one HTTP/2 connection),
// sends --patients patients on each, reads every answer and checks it: each correlation id
// answered exactly once, each answer `screened` with an eligibility and a funding answer that
// share one decision id and name every therapy, identical patients answered identically, and
// every stream ending with status OK. While the streams run it makes --unary
// EligibilityService/EvaluateEligibility calls on the same channel, which must succeed too.
// With --mix mixed (the default) every 4th patient is a minimal profile (a message well under
// 100 bytes), the others a full small-bowel NET profile (several hundred bytes).
//
//   node screen.mjs --target 127.0.0.1:50051 --streams 4 --patients 5000 --view basic --unary 20
//
// @grpc/grpc-js and @grpc/proto-loader are loaded from --node-prefix DIR (an `npm install
// --prefix DIR` tree; default target/client-tools/node under the repository). Exit code 0
// only if every check passed; one summary line, and on failure the exact status codes.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');

function parseArgs(argv) {
  const a = {
    target: null, streams: 4, patients: 5000, view: 'basic', unary: 0, mix: 'mixed',
    timeout: 900, sizes: false,
    proto: path.join(repo, 'proto'),
    nodePrefix: process.env.CLIENT_NODE_PREFIX || path.join(repo, 'target', 'client-tools', 'node'),
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    switch (k) {
      case '--target': a.target = v(); break;
      case '--streams': a.streams = Number(v()); break;
      case '--patients': a.patients = Number(v()); break;
      case '--view': a.view = v(); break;
      case '--unary': a.unary = Number(v()); break;
      case '--mix': a.mix = v(); break;
      case '--timeout': a.timeout = Number(v()); break;
      case '--proto': a.proto = path.resolve(v()); break;
      case '--node-prefix': a.nodePrefix = path.resolve(v()); break;
      case '--sizes': a.sizes = true; break;
      case '-h': case '--help':
        console.log('usage: node screen.mjs --target HOST:PORT [--streams 4] [--patients 5000] ' +
          '[--view basic|full] [--unary 20] [--mix mixed|full|minimal] [--timeout S] ' +
          '[--proto DIR] [--node-prefix DIR] [--sizes]');
        process.exit(0);
        break;
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  if (!['basic', 'full'].includes(a.view)) throw new Error('--view is basic or full');
  if (!['mixed', 'full', 'minimal'].includes(a.mix)) throw new Error('--mix is mixed, full or minimal');
  if (!a.target && !a.sizes) throw new Error('--target HOST:PORT is required');
  return a;
}

const ARGS = parseArgs(process.argv.slice(2));
const require = createRequire(path.join(ARGS.nodePrefix, 'package.json'));
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const packageDefinition = protoLoader.loadSync(
  ['netpathway/v1/screening_service.proto', 'netpathway/v1/eligibility_service.proto'],
  {
    // Without keepCase the loader expects camelCase keys and silently drops every snake_case
    // field below: the server would get empty patients.
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
    includeDirs: [ARGS.proto],
  });
const proto = grpc.loadPackageDefinition(packageDefinition).netpathway.v1;

const VIEW = ARGS.view === 'full' ? 'EVALUATION_VIEW_FULL' : 'EVALUATION_VIEW_BASIC';
const ALL_THERAPIES = packageDefinition['netpathway.v1.Therapy'].type.value
  .filter((v) => v.number !== 0).map((v) => v.name);
const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));
const MAX_PROBLEMS_SHOWN = 10;

const d = (year, month, day) => ({ year, month, day });

// A metastatic, progressive, SSTR-positive G2 small-bowel NET (the README's TA539 patient with
// the rest of the record filled in as a NET MDT would have it). No NHS number.
function fullPatient(localRef) {
  return {
    identifiers: { local_patient_reference: localRef },
    demographics: { nation: 'NATION_ENGLAND', date_of_birth: d(1962, 3, 14), sex: 'SEX_MALE' },
    tumour: {
      primary_site: 'PRIMARY_SITE_JEJUNUM_ILEUM',
      differentiation: 'DIFFERENTIATION_WELL',
      who_grade: 'WHO_GRADE_G2',
      ki67_percent: 8,
      mitoses_per_2mm2: 2,
      grading_system: 'GRADING_SYSTEM_WHO_2019',
      functional_syndrome: 'FUNCTIONAL_SYNDROME_CARCINOID',
      symptoms_controlled_on_ssa: true,
      primary_tumour_size_mm: 24,
    },
    extent: {
      extent: 'EXTENT_METASTATIC',
      resectable_with_curative_intent: false,
      resectability_mdt_date: d(2026, 10, 28),
      liver_metastases: true,
      liver_burden_percent: 18,
      liver_dominant: true,
      bilobar_liver_disease: true,
      extrahepatic_sites: ['EXTRAHEPATIC_SITE_LYMPH_NODES'],
      estimated_debulkable_percent: 60,
    },
    progression: {
      progressive: true,
      baseline_scan_date: d(2025, 11, 3),
      progression_scan_date: d(2026, 10, 20),
      assessed_by: 'consultant radiologist (RECIST 1.1)',
      on_ssa_at_progression: true,
    },
    imaging: {
      sstr_modality: 'SSTR_IMAGING_MODALITY_GA68_DOTA_PET',
      sstr_scan_date: d(2026, 10, 22),
      krenning_score: 4,
      fdg_positive_sstr_negative_lesion: false,
      sstr_positive: true,
    },
    prior_treatments: [
      {
        therapy: 'THERAPY_DEBULKING_SURGERY', start_date: d(2023, 9, 12), end_date: d(2023, 9, 12),
        best_response: 'BEST_RESPONSE_PARTIAL',
      },
      {
        therapy: 'THERAPY_SSA_LANREOTIDE', start_date: d(2024, 2, 1), cycles: 33,
        best_response: 'BEST_RESPONSE_STABLE',
      },
    ],
    medication: {
      on_long_acting_ssa: true,
      ssa_last_dose_date: d(2026, 11, 10),
      mibg_interfering_drugs: ['MIBG_INTERFERING_DRUG_NONE'],
      ssa_indication: 'SSA_INDICATION_SYMPTOM_AND_TUMOUR_CONTROL',
    },
    fitness: {
      ecog_performance_status: 1,
      karnofsky_performance_status: 80,
      life_expectancy_months: 48,
      can_follow_radiation_precautions: true,
      prior_marrow_radiotherapy_percent: 0,
      carcinoid_heart_disease: false,
      echocardiogram_date: d(2026, 9, 15),
      uncontrolled_hypertension: false,
      lvef_percent: 60,
      qt_prolongation_risk: false,
      child_pugh: 'CHILD_PUGH_NOT_CIRRHOTIC',
      portal_vein_thrombosis: false,
      ascites: false,
      biliary_enteric_anastomosis: false,
      fit_for_surgery: true,
    },
    labs: {
      collected_date: d(2026, 11, 5),
      haemoglobin_g_per_l: 128,
      platelets_10e9_per_l: 240,
      white_cell_count_10e9_per_l: 6.8,
      neutrophils_10e9_per_l: 4.1,
      creatinine_umol_per_l: 88,
      creatinine_clearance_ml_per_min: 82,
      egfr_ml_per_min_per_1_73m2: 78,
      on_dialysis: false,
      bilirubin_umol_per_l: 9,
      bilirubin_upper_limit_umol_per_l: 21,
      albumin_g_per_l: 40,
      inr: 1,
    },
    mdt: {
      discussed: true, mdt: 'MDT_NAME_LOCAL', mdt_date: d(2026, 11, 12),
      trial_or_registry_candidate: false,
    },
  };
}

// Only nation, age, site and Ki-67.
const MINIMAL = {
  demographics: { nation: 'NATION_ENGLAND', age_years: 64 },
  tumour: { primary_site: 'PRIMARY_SITE_JEJUNUM_ILEUM', ki67_percent: 8 },
};

// A fixed as-of date keeps the answers (dated facts, scan ages) the same whatever day this runs.
const AS_OF = d(2026, 12, 1);

const isMinimal = (i) => ARGS.mix === 'minimal' || (ARGS.mix === 'mixed' && i % 4 === 3);

function request(s, i) {
  const cid = `s${s}-p${i}`;
  return {
    correlation_id: cid, patient: isMinimal(i) ? MINIMAL : fullPatient(`SYN-${cid}`), view: VIEW, as_of_date: AS_OF,
  };
}

// The keepCase trap, checked before anything is sent: a full request that encodes to a few
// bytes lost its fields.
const serializeScreen = packageDefinition['netpathway.v1.ScreeningService'].ScreenCohort.requestSerialize;
const fullBytes = serializeScreen({ correlation_id: 's0-p0', patient: fullPatient('SYN-s0-p0'), view: VIEW, as_of_date: AS_OF }).length;
const minimalBytes = serializeScreen({ correlation_id: 's0-p3', patient: MINIMAL, view: VIEW, as_of_date: AS_OF }).length;
if (ARGS.sizes) {
  console.log(`full: ScreenCohortRequest ${fullBytes} bytes, minimal: ${minimalBytes} bytes (plus the 5-byte gRPC prefix)`);
  process.exit(0);
}
if (fullBytes < 300) {
  console.log(`screen.mjs: the full patient encodes to only ${fullBytes} bytes: fields were dropped (keepCase?)`);
  process.exit(2);
}

// ------------------------------------------------------------------------ checks

const res = {
  expected: ARGS.streams * ARGS.patients,
  answered: new Map(),
  answers: 0,
  errors: 0,
  problems: [],
  streamStatus: new Map(),
  shapes: { full: new Set(), minimal: new Set() },
  unaryOk: 0, unaryDuring: 0, unaryFailed: 0,
  streamsDone: false,
};
const problem = (t) => res.problems.push(t);

function badScreened(s) {
  const e = s.eligibility;
  const f = s.funding;
  if (!e || !f) return 'screened answer lacks eligibility or funding';
  if (!e.decision_id || e.decision_id !== f.decision_id) {
    return `decision ids differ or are empty (${e.decision_id} vs ${f.decision_id})`;
  }
  const same = (list) => list.length === ALL_THERAPIES.length && list.every((t, k) => t.therapy === ALL_THERAPIES[k]);
  if (!same(e.therapies)) return `eligibility names ${e.therapies.length} therapies, not all ${ALL_THERAPIES.length} in order`;
  if (!same(f.therapies)) return `funding names ${f.therapies.length} therapies, not all ${ALL_THERAPIES.length} in order`;
  if (e.therapies.some((t) => t.status === 'ELIGIBILITY_STATUS_UNSPECIFIED')) return 'an eligibility status is UNSPECIFIED';
  if (f.therapies.some((t) => t.route === 'FUNDING_ROUTE_UNSPECIFIED')) return 'a funding route is UNSPECIFIED';
  if (!e.policy || !String(e.policy.content_hash).startsWith('sha256:')) return 'eligibility names no policy content hash';
  if (VIEW === 'EVALUATION_VIEW_FULL') {
    if (!e.therapies.every((t) => t.summary && t.criteria.length > 0)) return 'FULL eligibility answer lacks a summary or criteria';
    if (!f.therapies.every((t) => t.summary)) return 'FULL funding answer lacks a summary';
  } else if (e.therapies.some((t) => t.summary || t.criteria.length)) {
    return 'BASIC eligibility answer carries FULL-only fields';
  }
  return null;
}

// The full patient is the README's TA539 case: Lu-177 eligible and NICE-funded.
function notTa539(s) {
  const lu = 'THERAPY_PRRT_LU177_DOTATATE';
  const status = s.eligibility.therapies.filter((t) => t.therapy === lu).map((t) => t.status);
  const route = s.funding.therapies.filter((t) => t.therapy === lu).map((t) => t.route);
  if (status.join() !== 'ELIGIBILITY_STATUS_ELIGIBLE') return `full patient: Lu-177 status ${status}, expected ELIGIBLE`;
  if (route.join() !== 'FUNDING_ROUTE_ROUTINELY_COMMISSIONED_NICE_TA') {
    return `full patient: Lu-177 route ${route}, expected ROUTINELY_COMMISSIONED_NICE_TA`;
  }
  return null;
}

function checkAnswer(s, resp) {
  const cid = resp.correlation_id;
  res.answers++;
  const n = res.answered.get(cid) || 0;
  res.answered.set(cid, n + 1);
  if (!cid.startsWith(`s${s}-p`)) {
    res.errors++;
    return problem(`stream ${s}: answer for another stream's or unknown id ${JSON.stringify(cid)}`);
  }
  if (n) {
    res.errors++;
    return problem(`stream ${s}: ${cid} answered twice`);
  }
  if (resp.result === 'error') {
    res.errors++;
    return problem(`${cid}: in-stream error code=${resp.error.code} (${CODE_NAMES[resp.error.code]}) message=${JSON.stringify(resp.error.message)}`);
  }
  if (resp.result !== 'screened') {
    res.errors++;
    return problem(`${cid}: answer has neither screened nor error`);
  }
  const kind = isMinimal(Number(cid.split('-p')[1])) ? 'minimal' : 'full';
  const bad = badScreened(resp.screened) || (kind === 'full' && notTa539(resp.screened));
  if (bad) {
    res.errors++;
    problem(`${cid}: ${bad}`);
  }
  const e = resp.screened.eligibility;
  const f = resp.screened.funding;
  res.shapes[kind].add(JSON.stringify([
    (e ? e.therapies : []).map((t) => [t.therapy, t.status]),
    (f ? f.therapies : []).map((t) => [t.therapy, t.route, t.next_route_if_refused])]));
}

// ------------------------------------------------------------------------ calls

function oneStream(client, s) {
  return new Promise((resolve) => {
    let n = 0;
    let finished = false;
    const call = client.ScreenCohort({ deadline: Date.now() + ARGS.timeout * 1000 });
    call.on('data', (resp) => { n++; checkAnswer(s, resp); });
    call.on('error', () => {}); // the status event below carries the code and details
    call.on('status', (st) => {
      finished = true;
      res.streamStatus.set(s, [CODE_NAMES[st.code] || String(st.code), st.details, n]);
      resolve();
    });
    (async () => {
      for (let i = 0; i < ARGS.patients && !finished; i++) {
        if (!call.write(request(s, i))) {
          // Backpressure: wait for room, or for the call to end.
          await new Promise((resume) => {
            const go = () => {
              call.off('drain', go);
              call.off('status', go);
              resume();
            };
            call.on('drain', go);
            call.on('status', go);
          });
        }
      }
      if (!finished) call.end();
    })().catch((err) => problem(`stream ${s}: writing failed: ${err}`));
  });
}

function unaryRequest(k) {
  return {
    patient: fullPatient(`SYN-unary-${k}`),
    therapies: ['THERAPY_PRRT_LU177_DOTATATE'],
    as_of_date: AS_OF,
    view: 'EVALUATION_VIEW_BASIC',
  };
}

async function unaries(eligibility) {
  const due = (k) => res.answers >= Math.floor(((k + 1) * res.expected) / (ARGS.unary + 1)) || res.streamsDone;
  for (let k = 0; k < ARGS.unary; k++) {
    while (!due(k)) await new Promise((r) => setTimeout(r, 10));
    await new Promise((resolve) => {
      eligibility.EvaluateEligibility(unaryRequest(k), { deadline: Date.now() + 60000 }, (err, resp) => {
        if (err) {
          res.unaryFailed++;
          problem(`unary ${k}: ${CODE_NAMES[err.code]} details=${JSON.stringify(err.details)}`);
        } else if (resp.decision_id && resp.therapies.length === 1
          && resp.therapies[0].therapy === 'THERAPY_PRRT_LU177_DOTATATE'
          && resp.therapies[0].status === 'ELIGIBILITY_STATUS_ELIGIBLE') {
          res.unaryOk++;
          if (!res.streamsDone) res.unaryDuring++;
        } else {
          res.unaryFailed++;
          problem(`unary ${k}: unexpected answer ${JSON.stringify(resp)}`);
        }
        resolve();
      });
    });
  }
}

function finish() {
  let missing = 0;
  let firstMissing = [];
  for (let s = 0; s < ARGS.streams; s++) {
    for (let i = 0; i < ARGS.patients; i++) {
      if (!res.answered.has(`s${s}-p${i}`)) {
        missing++;
        if (firstMissing.length < 5) firstMissing.push(`s${s}-p${i}`);
      }
    }
  }
  if (missing) problem(`${missing} patients never answered, first: ${firstMissing.join(', ')}`);
  for (const [kind, shapes] of Object.entries(res.shapes)) {
    if (shapes.size > 1) problem(`identical ${kind} patients got ${shapes.size} different answers`);
  }
  for (let s = 0; s < ARGS.streams; s++) {
    const [code, details, n] = res.streamStatus.get(s) || ['NO_STATUS', 'stream never finished', 0];
    if (code !== 'OK') problem(`stream ${s} ended ${code} details=${JSON.stringify(details)} after ${n} answers on it`);
  }
  if (res.unaryFailed || res.unaryOk !== ARGS.unary) {
    problem(`unary calls: ${res.unaryOk} ok, ${res.unaryFailed} failed of ${ARGS.unary}`);
  }
  return res.problems.length === 0 && res.errors === 0 && missing === 0;
}

async function main() {
  const creds = grpc.credentials.createInsecure();
  const screening = new proto.ScreeningService(ARGS.target, creds);
  // The same channel (so the same HTTP/2 connection) for the unary calls.
  const eligibility = new proto.EligibilityService(ARGS.target, creds, { channelOverride: screening.getChannel() });
  const start = process.hrtime.bigint();
  const u = unaries(eligibility);
  const streams = [];
  for (let s = 0; s < ARGS.streams; s++) streams.push(oneStream(screening, s));
  await Promise.all(streams);
  res.streamsDone = true;
  await u;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  screening.close();
  const ok = finish();
  console.log(`screen.mjs node=${process.version} grpc-js=${require('@grpc/grpc-js/package.json').version} ` +
    `view=${ARGS.view} mix=${ARGS.mix} streams=${ARGS.streams} patients=${ARGS.patients} ` +
    `expected=${res.expected} answers=${res.answers} unique=${res.answered.size} errors=${res.errors} ` +
    `unary=${res.unaryOk}/${ARGS.unary} (during streams ${res.unaryDuring}) ` +
    `seconds=${seconds.toFixed(1)} result=${ok ? 'PASS' : 'FAIL'}`);
  if (!ok) {
    for (const [s, [code, details, n]] of [...res.streamStatus.entries()].sort((a, b) => a[0] - b[0])) {
      console.log(`  stream ${s}: status ${code} details=${JSON.stringify(details)} answers=${n}`);
    }
    for (const p of res.problems.slice(0, MAX_PROBLEMS_SHOWN)) console.log(`  ${p}`);
    if (res.problems.length > MAX_PROBLEMS_SHOWN) console.log(`  ... ${res.problems.length - MAX_PROBLEMS_SHOWN} more problems`);
  }
  process.exitCode = ok ? 0 : 1;
}

main().catch((err) => {
  console.log(`screen.mjs: ${err && err.stack ? err.stack : err}`);
  process.exitCode = 1;
});
