//! [`DeliveryStore`] for [`SqlStore`].

use async_trait::async_trait;

use super::connect::Scope;
use super::rows::{DeliveryRow, delivery_columns};
use super::sql::{One, q};
use super::{DeliveryStore, SqlStore, now};
use crate::deliveries::{DeliveryClaim, DeliveryStatus, NewDelivery, WebhookDelivery};
use crate::{Error, Result};

#[async_trait]
impl DeliveryStore for SqlStore {
    async fn begin_delivery(&self, delivery: NewDelivery, stale_after: chrono::Duration) -> Result<DeliveryClaim> {
        if delivery.delivery_id.is_empty() || delivery.delivery_id.len() > 200 {
            return Err(Error::invalid("delivery id must be 1 to 200 characters"));
        }
        let at = now();
        let mut tx = self.begin(Scope::Global).await?;
        // Either key may conflict: the delivery id (a redelivery) or the body's hash (the same
        // signed body replayed under another id).
        let inserted: Option<One<String>> = tx
            .fetch_optional(
                q("INSERT INTO webhook_deliveries (delivery_id, event, action, installation_id, body_sha256, status, \
                   received_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'processing', $6, $6) \
                   ON CONFLICT DO NOTHING RETURNING delivery_id")
                .arg(delivery.delivery_id.as_str())
                .arg(delivery.event)
                .arg(delivery.action)
                .arg(delivery.installation_id)
                .arg(delivery.body_sha256.clone())
                .arg(at),
            )
            .await?;
        if inserted.is_some() {
            tx.commit().await?;
            return Ok(DeliveryClaim::Process);
        }
        let known: Option<One<String>> = tx
            .fetch_optional(
                q("SELECT delivery_id FROM webhook_deliveries WHERE delivery_id = $1")
                    .arg(delivery.delivery_id.as_str()),
            )
            .await?;
        if known.is_none() {
            // A new id for a body already received: a replay, whatever became of the original.
            let original: Option<One<String>> = tx
                .fetch_optional(
                    q("SELECT status FROM webhook_deliveries WHERE body_sha256 = $1").arg(delivery.body_sha256),
                )
                .await?;
            tx.commit().await?;
            let status = original.and_then(|One(s)| DeliveryStatus::parse(&s)).unwrap_or(DeliveryStatus::Processed);
            tracing::warn!(delivery = %delivery.delivery_id, "a delivery's body was already received under another id");
            return Ok(DeliveryClaim::Duplicate(status));
        }
        // Seen before: take it again only if it failed, or was abandoned mid-processing.
        let retaken = tx
            .execute(
                q("UPDATE webhook_deliveries SET status = 'processing', error = NULL, attempts = attempts + 1, \
                   updated_at = $2 WHERE delivery_id = $1 \
                   AND (status = 'failed' OR (status = 'processing' AND updated_at < $3))")
                .arg(delivery.delivery_id.as_str())
                .arg(at)
                .arg(at - stale_after),
            )
            .await?;
        let claim = if retaken == 1 {
            DeliveryClaim::Process
        } else {
            let status: One<String> = tx
                .fetch_one(
                    q("SELECT status FROM webhook_deliveries WHERE delivery_id = $1")
                        .arg(delivery.delivery_id.as_str()),
                )
                .await?;
            DeliveryClaim::Duplicate(
                DeliveryStatus::parse(&status.0)
                    .ok_or_else(|| Error::Corrupt(format!("delivery status {}", status.0)))?,
            )
        };
        tx.commit().await?;
        Ok(claim)
    }

    async fn finish_delivery(&self, delivery_id: &str, status: DeliveryStatus, error: Option<&str>) -> Result<()> {
        let mut tx = self.begin(Scope::Global).await?;
        let updated = tx
            .execute(
                q("UPDATE webhook_deliveries SET status = $2, error = $3, updated_at = $4 WHERE delivery_id = $1")
                    .arg(delivery_id)
                    .arg(status.as_str())
                    .arg(error)
                    .arg(now()),
            )
            .await?;
        if updated == 0 {
            return Err(Error::not_found("delivery"));
        }
        tx.commit().await
    }

    async fn get_delivery(&self, delivery_id: &str) -> Result<WebhookDelivery> {
        let mut tx = self.begin(Scope::Global).await?;
        let row: Option<DeliveryRow> = tx
            .fetch_optional(
                q(concat!("SELECT ", delivery_columns!(), " FROM webhook_deliveries WHERE delivery_id = $1"))
                    .arg(delivery_id),
            )
            .await?;
        row.ok_or(Error::not_found("delivery"))?.try_into()
    }
}
