//! quiver's REST API, shaped like Qdrant's, so Qdrant's clients (the `qdrant-client` Python
//! package and what is built on it) work unchanged.
//!
//! Every route translates its JSON into the same request the gRPC API takes and calls the
//! `Collections`, `Points` and `Snapshots` services in-process ([`Services`]): validation, routing over
//! shards, forwarding to leaders and the mapping of errors all stay where they are, and an error
//! becomes an HTTP status in one place ([`reply`]). Answers use Qdrant's envelope
//! (`{"result": ..., "status": "ok", "time": seconds}`; errors `{"status": {"error": ...}}`).
//!
//! Where quiver's model differs from Qdrant's, the difference is documented on the route (one
//! unnamed vector per point, `m: 0` meaning a flat index, `is_null` and `is_empty` read with
//! quiver's rule that `null` counts as absent) and anything that cannot be honoured is refused
//! with 400 naming the field, never ignored. `GET /openapi.json` describes the routes.

mod collections;
mod filter;
mod points;
mod reply;
mod search;
mod snapshots;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use quiver_proto::v1::collections_server::Collections;
use quiver_proto::v1::points_server::Points;
use quiver_proto::v1::snapshots_server::Snapshots;
use tokio::net::TcpListener;

/// The Qdrant REST API version these routes follow (what `GET /` reports as `version`, so
/// clients that check compatibility accept the server).
pub const QDRANT_API_VERSION: &str = "1.20.0";

/// The services the routes call.
#[derive(Clone)]
pub struct Services {
    pub collections: Arc<dyn Collections>,
    pub points: Arc<dyn Points>,
    pub snapshots: Arc<dyn Snapshots<DownloadStream = SnapshotChunks>>,
}

/// A snapshot file as `Snapshots.Download` streams it.
pub type SnapshotChunks = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<quiver_proto::v1::SnapshotChunk, tonic::Status>> + Send>,
>;

/// The routes, answering with `services`; bodies of up to `max_body_bytes` are read.
pub fn app(services: Services, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(collections::root))
        .route("/healthz", get(collections::health))
        .route("/livez", get(collections::health))
        .route("/readyz", get(collections::health))
        .route("/openapi.json", get(collections::openapi))
        .route("/collections", get(collections::list))
        .route("/collections/aliases", post(collections::update_aliases))
        .route("/aliases", get(collections::aliases))
        .route(
            "/collections/:name/aliases",
            get(collections::collection_aliases),
        )
        .route(
            "/collections/:name",
            get(collections::info)
                .put(collections::create)
                .patch(collections::update)
                .delete(collections::drop),
        )
        .route("/collections/:name/exists", get(collections::exists))
        .route(
            "/collections/:name/points",
            put(points::upsert).post(points::retrieve),
        )
        .route("/collections/:name/points/:id", get(points::retrieve_one))
        .route("/collections/:name/points/delete", post(points::delete))
        .route("/collections/:name/points/scroll", post(points::scroll))
        .route("/collections/:name/points/count", post(points::count))
        .route("/collections/:name/points/search", post(search::search))
        .route(
            "/collections/:name/points/search/batch",
            post(search::search_batch),
        )
        .route("/collections/:name/points/query", post(search::query))
        .route(
            "/collections/:name/points/query/batch",
            post(search::query_batch),
        )
        .route(
            "/collections/:name/points/payload",
            post(points::set_payload).put(points::overwrite_payload),
        )
        .route(
            "/collections/:name/points/payload/delete",
            post(points::delete_payload),
        )
        .route(
            "/collections/:name/points/payload/clear",
            post(points::clear_payload),
        )
        .route(
            "/collections/:name/points/vectors",
            put(points::update_vectors),
        )
        .route(
            "/collections/:name/snapshots",
            get(snapshots::list).post(snapshots::create),
        )
        .route(
            "/collections/:name/snapshots/:snapshot",
            get(snapshots::download).delete(snapshots::delete),
        )
        .route("/collections/:name/index", put(collections::create_index))
        .route(
            "/collections/:name/index/:field",
            delete(collections::drop_index),
        )
        .fallback(reply::no_route)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(services)
}

/// Serves the routes on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    max_body_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(services, max_body_bytes))
        .with_graceful_shutdown(shutdown)
        .await
}
