//! `kvs.v1.KeyValue`: the book's calls with `bytes` keys and values, and conditions on
//! puts and deletes, `Increment`, TTLs, and each key's revision and deadline on `Get`.

use kvs_plugin_api::{Change, Condition, Consistency, Expiry, Outcome, RequestContext, Update};
use kvs_proto::v1;
use tonic::{Request, Response, Status};

use super::{Service, consistency_of, context_of, status_of, within};

/// A `kvs.v1.Condition` as the contract's.
fn condition_of(condition: Option<v1::Condition>) -> Condition {
    use v1::condition::When;
    match condition.and_then(|c| c.when) {
        None => Condition::Always,
        Some(When::Absent(_)) => Condition::Absent,
        Some(When::Present(_)) => Condition::Present,
        Some(When::Revision(r)) => Condition::Revision(r),
        Some(When::Value(v)) => Condition::Value(v),
    }
}

impl Service {
    /// Makes `update` within the caller's deadline.
    async fn update(&self, ctx: &RequestContext, update: Update) -> Result<Outcome, Status> {
        let outcome = self.store.update_with(ctx, &update);
        within(ctx.deadline, async { outcome.await.map_err(status_of) }).await
    }
}

#[tonic::async_trait]
impl v1::key_value_server::KeyValue for Service {
    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::GetResponse>, Status> {
        let (ctx, consistency) = (context_of(&request), consistency_of(&request));
        let key = request.into_inner().key;
        let result = if consistency == Consistency::LINEARIZABLE {
            // As `Service::get`: a barrier may wait, on a blocking thread.
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.get_entry_with(&ctx, &key, consistency))
                .await
                .map_err(|e| Status::internal(format!("the read failed: {e}")))?
        } else {
            self.store.get_entry_with(&ctx, &key, consistency)
        };
        match result.map_err(status_of)? {
            Some(entry) => Ok(Response::new(v1::GetResponse {
                value: entry.value,
                revision: entry.revision,
                expires_at_ms: entry.expires_at.unwrap_or(0),
            })),
            None => Err(Status::not_found("no such key")),
        }
    }

    async fn put(
        &self,
        request: Request<v1::PutRequest>,
    ) -> Result<Response<v1::PutResponse>, Status> {
        let ctx = context_of(&request);
        let v1::PutRequest {
            key,
            value,
            condition,
            ttl_ms,
            keep_ttl,
        } = request.into_inner();
        if condition.is_none() && ttl_ms == 0 && !keep_ttl {
            // The book's put: no evaluation needed.
            let write = self.store.put_with(&ctx, key, value);
            within(ctx.deadline, async { write.await.map_err(status_of) }).await?;
            return Ok(Response::new(v1::PutResponse {
                applied: true,
                revision: 0,
            }));
        }
        let expiry = match (ttl_ms, keep_ttl) {
            (0, true) => Expiry::Keep,
            (0, false) => Expiry::Clear,
            (ms, _) => Expiry::After(ms),
        };
        let update = Update::new(key, Change::Put(value))
            .when(condition_of(condition))
            .expiring(expiry);
        let outcome = self.update(&ctx, update).await?;
        Ok(Response::new(v1::PutResponse {
            applied: outcome.applied,
            revision: outcome.revision,
        }))
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        let ctx = context_of(&request);
        let v1::DeleteRequest { key, condition } = request.into_inner();
        if condition.is_none() {
            let write = self.store.delete_with(&ctx, key);
            within(ctx.deadline, async { write.await.map_err(status_of) }).await?;
            return Ok(Response::new(v1::DeleteResponse { applied: true }));
        }
        let update = Update::new(key, Change::Delete).when(condition_of(condition));
        let outcome = self.update(&ctx, update).await?;
        Ok(Response::new(v1::DeleteResponse {
            applied: outcome.applied,
        }))
    }

    async fn increment(
        &self,
        request: Request<v1::IncrementRequest>,
    ) -> Result<Response<v1::IncrementResponse>, Status> {
        let ctx = context_of(&request);
        let v1::IncrementRequest { key, by } = request.into_inner();
        let outcome = self
            .update(&ctx, Update::new(key, Change::Increment(by)))
            .await?;
        let value = outcome
            .value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .ok_or_else(|| Status::internal("the host's outcome carried no count"))?;
        Ok(Response::new(v1::IncrementResponse {
            value,
            revision: outcome.revision,
        }))
    }
}
