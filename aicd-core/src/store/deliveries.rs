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
        let inserted: Option<One<String>> = tx
            .fetch_optional(
                q("INSERT INTO webhook_deliveries (delivery_id, event, action, installation_id, status, \
                   received_at, updated_at) VALUES ($1, $2, $3, $4, 'processing', $5, $5) \
                   ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id")
                .arg(delivery.delivery_id.as_str())
                .arg(delivery.event)
                .arg(delivery.action)
                .arg(delivery.installation_id)
                .arg(at),
            )
            .await?;
        if inserted.is_some() {
            tx.commit().await?;
            return Ok(DeliveryClaim::Process);
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
