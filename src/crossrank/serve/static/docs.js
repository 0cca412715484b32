// The OpenAPI explorer at /docs: Swagger UI (served by this server from the installed
// fastapi-offline package) over this server's own description. Nothing loads from elsewhere.
window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
