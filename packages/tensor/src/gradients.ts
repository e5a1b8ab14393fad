// Registers tfjs-core's gradient functions (see tsup.config.ts for why this is a separate bundle).
import '@tensorflow/tfjs-core/dist/register_all_gradients';
