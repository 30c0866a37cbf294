//! The Nodes service from a node agent's side: joining with a bootstrap
//! token, and refreshing the list of masters.

use rafter_proto::api::nodes_client::NodesClient;
use rafter_proto::api::{JoinRequest, JoinResponse, MastersRequest};

use crate::client::Conn;
use crate::{Client, Error};

impl Client {
    /// Exchanges this client's token (a bootstrap token, or the admin
    /// token) for a credential of node `node_name`, through whichever
    /// master answers.
    pub async fn join(&self, node_name: &str) -> Result<JoinResponse, Error> {
        let req = JoinRequest {
            node_name: node_name.into(),
        };
        let (resp, _) = self
            .with_failover(self.policy(), |ch, _| {
                let r = req.clone();
                async move { NodesClient::<Conn>::new(ch).join(r).await }
            })
            .await?;
        Ok(resp)
    }

    /// The masters' client addresses, as the cluster knows them.
    pub async fn masters(&self) -> Result<Vec<String>, Error> {
        let (resp, _) = self
            .with_failover(self.policy(), |ch, _| async move {
                NodesClient::<Conn>::new(ch)
                    .masters(MastersRequest {})
                    .await
            })
            .await?;
        Ok(resp.masters)
    }
}
