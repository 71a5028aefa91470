// The ESM entry point of @aicd/sdk: the same objects as the CommonJS one (lib/sdk.cjs).
import sdk from './sdk.cjs';

export const {
  AicdError,
  PermanentAgentError,
  BudgetExhausted,
  Client,
  Session,
  Worker,
  verifyWebhook,
  parseWebhook,
  checkPolicy,
  enforcePolicy,
} = sdk;
export default sdk;
