// The entry `npm run build` bundles into vendor/kit.js, so the page loads @solana/kit as one
// ES module without a dev server.
export * from '@solana/kit';
