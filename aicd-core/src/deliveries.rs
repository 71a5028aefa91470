//! Webhook deliveries, recorded by their delivery id so a redelivery is recognised.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What became of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Being processed now.
    Processing,
    /// Processed; a redelivery has no effect.
    Processed,
    /// Processing failed; a redelivery is processed again.
    Failed,
    /// Acknowledged and deliberately ignored (unknown event, unlinked installation).
    Ignored,
}

impl DeliveryStatus {
    /// The stable name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Processing => "processing",
            DeliveryStatus::Processed => "processed",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Ignored => "ignored",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Processing, Self::Processed, Self::Failed, Self::Ignored].into_iter().find(|d| d.as_str() == s)
    }
}

/// A webhook delivery as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The sender's delivery id (GitHub's `X-GitHub-Delivery`).
    pub delivery_id: String,
    /// The event name (`issues`, `ping`, ...).
    pub event: String,
    /// The payload's `action`, if any.
    pub action: Option<String>,
    /// The App installation it came from, if any.
    pub installation_id: Option<crate::github::InstallationId>,
    /// What became of it.
    pub status: DeliveryStatus,
    /// Why processing failed.
    pub error: Option<String>,
    /// How many times it was received.
    pub attempts: u32,
    /// When it was first received.
    pub received_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

/// A delivery to record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDelivery {
    /// The sender's delivery id (1 to 200 characters).
    pub delivery_id: String,
    /// The event name.
    pub event: String,
    /// The payload's `action`, if any.
    pub action: Option<String>,
    /// The App installation it came from, if any.
    pub installation_id: Option<crate::github::InstallationId>,
    /// The SHA-256 of its raw body: a body already received under another delivery id is a
    /// replay, and a [`DeliveryClaim::Duplicate`]. `None` records no hash (nothing to compare).
    pub body_sha256: Option<Vec<u8>>,
}

/// Whether a received delivery should be processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryClaim {
    /// First sight, or a redelivery of one that failed (or was abandoned mid-processing): process it.
    Process,
    /// Already handled (or being handled right now): acknowledge without effect.
    Duplicate(DeliveryStatus),
}
