// Starts Swagger UI on this server's own /openapi.json. A file, not an inline script, so the
// page runs under the strict Content-Security-Policy of tally.gateway.docs.
/* global SwaggerUIBundle */
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#docs",
  deepLinking: true,
  // "Try it out" calls this same origin only; nothing else is fetched.
  validatorUrl: null,
  tryItOutEnabled: false,
  persistAuthorization: false,
});
