// A TaylorGLO client in Node.js built from protos/ alone (no generated code, no Python):
// proves the gRPC contract is usable from another language (tests/rpc/test_js_client.py).
//
//   node client.js PROTOS_DIR HOST:PORT < spec.json
//
// Tokens come from TAYLORGLO_CLIENT_TOKEN and TAYLORGLO_TRAINER_TOKEN. The client
// 1. submits the spec with the trainer token (must be refused: wrong role),
// 2. submits it with population 1 (must be refused: INVALID_ARGUMENT naming the field),
// 3. submits it with the client token and reads it back with GetExperiment,
// 4. as a trainer, leases one candidate and reports fitness 0.5 for it,
// and prints what it saw as one JSON object on stdout.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [protosDir, address] = process.argv.slice(2);
const options = { includeDirs: [protosDir], keepCase: true, enums: String, longs: Number, defaults: true };
const files = ["experiment_service.proto", "worker_service.proto"].map((f) => path.join("taylorglo", "v1", f));
const v1 = grpc.loadPackageDefinition(loader.loadSync(files, options)).taylorglo.v1;

const credentials = grpc.credentials.createInsecure();
const experiments = new v1.ExperimentService(address, credentials);
const workers = new v1.WorkerService(address, credentials);

function bearer(token) {
  const metadata = new grpc.Metadata();
  metadata.add("authorization", `Bearer ${token}`);
  return metadata;
}

// A unary call as a promise of {value} or {code, details}.
function call(stub, method, request, token) {
  return new Promise((resolve) => {
    stub[method](request, bearer(token), { deadline: Date.now() + 30000 }, (error, value) =>
      resolve(error ? { code: grpc.status[error.code], details: error.details } : { value }));
  });
}

async function main() {
  const spec = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const clientToken = process.env.TAYLORGLO_CLIENT_TOKEN;
  const trainerToken = process.env.TAYLORGLO_TRAINER_TOKEN;
  const seen = {};

  seen.wrong_role = await call(experiments, "SubmitExperiment", { spec }, trainerToken);
  const invalid = { ...spec, search: { ...spec.search, population: 1 } };
  seen.invalid = await call(experiments, "SubmitExperiment", { spec: invalid }, clientToken);

  const submitted = await call(experiments, "SubmitExperiment", { spec }, clientToken);
  if (!submitted.value) throw new Error(`SubmitExperiment failed: ${JSON.stringify(submitted)}`);
  seen.submitted = submitted.value;
  seen.fetched = await call(experiments, "GetExperiment", { experiment_id: submitted.value.id }, clientToken);

  const leased = await call(workers, "LeaseCandidate", { trainer_id: "js-trainer", wait_ms: 10000 }, trainerToken);
  seen.lease = leased.value ? leased.value.lease : leased;
  if (seen.lease && seen.lease.lease_id) {
    seen.report = await call(workers, "ReportResult", {
      lease_id: seen.lease.lease_id,
      trainer_id: "js-trainer",
      status: "EVALUATION_STATUS_OK",
      fitness: 0.5,
      metrics: { val_accuracy: 0.5, val_loss: 1.25, steps: 20, wall_time_s: 0.1, attempts: 1 },
    }, trainerToken);
  }
  process.stdout.write(JSON.stringify(seen));
}

main().then(
  () => { experiments.close(); workers.close(); },
  (error) => { console.error(error.stack || error); process.exit(1); },
);
