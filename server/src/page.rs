//! The live event page and the browser client, compiled into the binary.

use axum::http::header;
use axum::response::IntoResponse;

/// `GET /`: the live event page.
pub(crate) async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../static/index.html"),
    )
}

/// `GET /ferret-ws.js`: the browser client.
pub(crate) async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../static/ferret-ws.js"),
    )
}
