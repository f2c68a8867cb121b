// net-pathway's TypeScript client: the schemas and service descriptors generated from proto/
// (./gen, for Connect-ES's createClient), and the two things they leave to every caller:
// reading an error's details, and reading a ScreenCohort stream's answers.

export {
  ERROR_DOMAIN,
  type ErrorDetails,
  type FieldViolation,
  type PreconditionViolation,
  errorDetails,
  statusDetails,
} from "./errors.js";
export { type NotScreened, type Screened, type ScreeningAnswer, screenCohort } from "./screening.js";
