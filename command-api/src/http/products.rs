//! The catalog: the public list and product pages (no login), and the
//! administrators' routes to add, change, re-price, restock and retire products.
//! Reads come from the `products` view; changes are `orders_application::catalog`.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orders_application::catalog::{
    self, AddProductError, ChangeProductError, NewProduct, ProductChange,
};
use orders_application::CommandError;
use orders_domain::ids::ProductId;
use orders_domain::money::{Currency, Money, MoneyError};
use orders_domain::order::ProductUrl;
use orders_domain::product::{ProductError, Sku};
use orders_domain::user::Role;
use orders_projectors::query::{self, ListError};
use orders_projectors::View;
use orders_store::event_store::CommandMetadata;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::http::admin::require_role;
use crate::http::queries::{answer, MinPosition, Page};
use crate::http::{with_position, RequestContext};
use crate::problem::{ApiError, AppJson};
use crate::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/products", get(list_products))
        .route("/products/{id}", get(show_product))
        .route(
            "/admin/products",
            post(add_product).get(admin_list_products),
        )
        .route(
            "/admin/products/{id}",
            get(admin_show_product)
                .patch(change_product)
                .delete(retire_product),
        )
        .route("/admin/products/{id}/stock", post(adjust_stock))
}

/// A product as the catalog shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductDetails {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    /// A decimal string with the currency's minor digits, e.g. `"29.99"`.
    pub price: String,
    /// ISO 4217.
    pub currency: String,
    /// Units that can be bought now.
    pub available: i64,
    pub image_url: Option<String>,
    /// `active` or `retired`.
    pub status: String,
}

/// A product with its stock, as administrators see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductStock {
    #[serde(flatten)]
    pub product: ProductDetails,
    /// Units in the warehouse (shipped units have left it).
    pub on_hand: i64,
    /// Units held by pending and confirmed purchases.
    pub reserved: i64,
    /// RFC 3339, UTC.
    pub added_at: String,
    pub updated_at: String,
}

/// An amount as JSON carries it: the currency's minor digits exactly.
pub(crate) fn amount_text(amount: rust_decimal::Decimal, currency: &str) -> String {
    Currency::from_code(currency)
        .ok()
        .and_then(|currency| Money::new(amount, currency).ok())
        .map(|money| money.amount_string())
        .unwrap_or_else(|| amount.to_string())
}

impl From<query::products::ProductRow> for ProductDetails {
    fn from(row: query::products::ProductRow) -> Self {
        ProductDetails {
            product_id: row.product_id,
            price: amount_text(row.price, &row.currency),
            sku: row.sku,
            name: row.name,
            description: row.description,
            currency: row.currency,
            available: row.available,
            image_url: row.image_url,
            status: row.status,
        }
    }
}

impl From<query::products::ProductRow> for ProductStock {
    fn from(row: query::products::ProductRow) -> Self {
        let (on_hand, reserved) = (row.on_hand, row.reserved);
        let (added_at, updated_at) = (row.added_at.to_rfc3339(), row.updated_at.to_rfc3339());
        ProductStock {
            product: ProductDetails::from(row),
            on_hand,
            reserved,
            added_at,
            updated_at,
        }
    }
}

/// The catalog's list parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CatalogParams {
    /// Only products whose name or SKU contains this, in any case.
    pub q: Option<String>,
    /// 1 to 100; 20 when left out.
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl CatalogParams {
    pub(crate) fn from_query(query: Result<Query<Self>, QueryRejection>) -> Result<Self, ApiError> {
        query
            .map(|Query(params)| params)
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }

    pub(crate) fn limit(&self) -> Result<i64, ApiError> {
        crate::http::queries::page_limit(self.limit.as_deref())
    }
}

/// The answer to a list's failure: a cursor it never gave out is a 422.
pub(crate) fn list_error(error: ListError, doing: &'static str) -> ApiError {
    match error {
        ListError::BadCursor => ApiError::invalid_field("cursor", error.to_string()),
        ListError::Database(error) => ApiError::internal(anyhow::Error::new(error).context(doing)),
    }
}

/// The catalog's products (not retired), by name, searchable.
pub(crate) async fn catalog_page(
    state: &AppState,
    params: &CatalogParams,
    include_retired: bool,
) -> Result<query::Page<query::products::ProductRow>, ApiError> {
    let limit = params.limit()?;
    query::products::list(
        state.pool(),
        params.q.as_deref(),
        include_retired,
        limit,
        params.cursor.as_deref(),
    )
    .await
    .map_err(|error| list_error(error, "reading the products view"))
}

#[utoipa::path(get, path = "/products", tag = "catalog",
    params(CatalogParams, ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = Page<ProductDetails>), (status = 422, body = crate::problem::Problem)))]
pub async fn list_products(
    State(state): State<Arc<AppState>>,
    min_position: MinPosition,
    params: Result<Query<CatalogParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = CatalogParams::from_query(params)?;
    let stale = min_position.wait(&state, &[View::Products]).await?;
    let found = catalog_page(&state, &params, false).await?;
    let page = Page {
        items: found.items.into_iter().map(ProductDetails::from).collect(),
        next_cursor: found.next_cursor,
    };
    Ok(answer(Json(page), stale))
}

fn product_id_from_path(id: &str) -> Result<ProductId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound("no such product"))
}

#[utoipa::path(get, path = "/products/{id}", tag = "catalog",
    params(("id" = String, Path), ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = ProductDetails), (status = 404, body = crate::problem::Problem)))]
pub async fn show_product(
    State(state): State<Arc<AppState>>,
    min_position: MinPosition,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let product_id = product_id_from_path(&id)?;
    let stale = min_position.wait(&state, &[View::Products]).await?;
    let row = query::products::get(state.pool(), product_id.as_uuid())
        .await
        .context("reading the products view")?;
    Ok(match row {
        Some(row) => answer(Json(ProductDetails::from(row)), stale),
        None => answer(ApiError::NotFound("no such product"), stale),
    })
}

#[utoipa::path(get, path = "/admin/products", tag = "catalog", security(("bearer" = [])),
    params(CatalogParams, ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = Page<ProductStock>), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)))]
pub async fn admin_list_products(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    params: Result<Query<CatalogParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = CatalogParams::from_query(params)?;
    require_role(&state, caller, &[Role::Admin, Role::Auditor]).await?;
    let stale = min_position.wait(&state, &[View::Products]).await?;
    let found = catalog_page(&state, &params, true).await?;
    let page = Page {
        items: found.items.into_iter().map(ProductStock::from).collect(),
        next_cursor: found.next_cursor,
    };
    Ok(answer(Json(page), stale))
}

#[utoipa::path(get, path = "/admin/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path), ("Orders-Min-Position" = Option<String>, Header)),
    responses((status = 200, body = ProductStock), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem)))]
pub async fn admin_show_product(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    min_position: MinPosition,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let product_id = product_id_from_path(&id)?;
    require_role(&state, caller, &[Role::Admin, Role::Auditor]).await?;
    let stale = min_position.wait(&state, &[View::Products]).await?;
    let row = query::products::get(state.pool(), product_id.as_uuid())
        .await
        .context("reading the products view")?;
    Ok(match row {
        Some(row) => answer(Json(ProductStock::from(row)), stale),
        None => answer(ApiError::NotFound("no such product"), stale),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddProductRequest {
    /// Letters, digits, `-`, `_`, `.`; unique in the catalog (any case).
    pub sku: String,
    pub name: String,
    /// A decimal string, e.g. `"29.99"`.
    pub price: String,
    /// ISO 4217.
    pub currency: String,
    pub description: Option<String>,
    /// An http(s) URL.
    pub image_url: Option<String>,
    /// Units on hand to start with; 0 when left out.
    pub stock: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AddProductResponse {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeProductRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    /// A decimal string in the product's currency.
    pub price: Option<String>,
    /// An http(s) URL; `""` removes the image.
    pub image_url: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustStockRequest {
    /// Units to add (positive) or remove (negative).
    pub quantity: i64,
    /// Why (a delivery, a count, damage).
    pub reason: String,
}

/// The answer to a product's refusal.
pub(crate) fn product_refusal(refusal: ProductError) -> ApiError {
    let message = refusal.to_string();
    match refusal {
        ProductError::NotFound => ApiError::NotFound("no such product"),
        ProductError::NameEmpty | ProductError::NameTooLong { .. } => {
            ApiError::invalid_field("name", message)
        }
        ProductError::DescriptionTooLong { .. } => ApiError::invalid_field("description", message),
        ProductError::PriceNotPositive => ApiError::invalid_field("price", message),
        ProductError::CurrencyChangeNotAllowed { .. } => ApiError::invalid_field("price", message),
        ProductError::StockOutOfRange { .. } => ApiError::invalid_field("stock", message),
        ProductError::ZeroAdjustment => ApiError::invalid_field("quantity", message),
        ProductError::ReasonInvalid { .. } => ApiError::invalid_field("reason", message),
        ProductError::AlreadyAdded | ProductError::Retired | ProductError::BelowReserved { .. } => {
            ApiError::Conflict(message)
        }
    }
}

fn product_command_error(error: CommandError<ProductError>, doing: &'static str) -> ApiError {
    ApiError::from_command(error, "no such product", doing, product_refusal)
}

fn price_error(error: MoneyError) -> ApiError {
    match error {
        MoneyError::UnknownCurrency(_) => ApiError::invalid_field("currency", error.to_string()),
        _ => ApiError::invalid_field("price", error.to_string()),
    }
}

fn image_url(text: &str) -> Result<Option<ProductUrl>, ApiError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    ProductUrl::parse(text)
        .map(Some)
        .map_err(|error| ApiError::invalid_field("image_url", error.to_string()))
}

/// What an addition asks for, checked as the API checks it (the console's form too).
pub(crate) fn new_product_request(request: AddProductRequest) -> Result<NewProduct, ApiError> {
    let sku = Sku::parse(&request.sku)
        .map_err(|error| ApiError::invalid_field("sku", error.to_string()))?;
    let currency = Currency::from_code(&request.currency).map_err(price_error)?;
    let price = Money::parse(&request.price, currency).map_err(price_error)?;
    let image_url = match request.image_url.as_deref() {
        Some(text) => image_url(text)?,
        None => None,
    };
    Ok(NewProduct {
        sku,
        name: request.name,
        description: request.description.unwrap_or_default(),
        price,
        image_url,
        stock: request.stock.unwrap_or(0),
    })
}

/// What a change asks for.
pub(crate) fn product_change_request(
    request: ChangeProductRequest,
) -> Result<ProductChange, ApiError> {
    Ok(ProductChange {
        name: request.name,
        description: request.description,
        price: request.price,
        image_url: request.image_url.as_deref().map(image_url).transpose()?,
    })
}

pub(crate) fn admin_metadata(caller: CurrentUser, context: RequestContext) -> CommandMetadata {
    CommandMetadata {
        actor: caller.actor(),
        correlation_id: context.correlation_id,
        causation_id: context.request_id.to_string(),
        request_id: context.request_id,
        idempotency_key: None,
    }
}

/// Adds a product (admin), after the role check, as the API and the console do.
pub(crate) async fn add_product_as(
    state: &AppState,
    caller: CurrentUser,
    context: RequestContext,
    product: NewProduct,
) -> Result<(ProductId, Option<orders_store::event_store::LogPosition>), ApiError> {
    require_role(state, caller, &[Role::Admin]).await?;
    let (product_id, receipt) =
        catalog::add_product(&state.events, product, &admin_metadata(caller, context))
            .await
            .map_err(|error| match error {
                AddProductError::SkuTaken => ApiError::Conflict(error.to_string()),
                AddProductError::Command(error) => product_command_error(error, "adding a product"),
            })?;
    Ok((product_id, receipt.position))
}

#[utoipa::path(post, path = "/admin/products", tag = "catalog", security(("bearer" = [])),
    request_body = AddProductRequest,
    responses((status = 201, body = AddProductResponse, headers(("Location" = String), ("Orders-Position" = String))),
              (status = 400, body = crate::problem::Problem), (status = 403, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn add_product(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    body: Result<AppJson<AddProductRequest>, ApiError>,
) -> Result<Response, ApiError> {
    // The role first: a shopper learns nothing from a 422 about the body.
    require_role(&state, caller, &[Role::Admin]).await?;
    let AppJson(request) = body?;
    let product = new_product_request(request)?;
    let (product_id, position) = add_product_as(&state, caller, context, product).await?;
    let created = (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/products/{product_id}"))],
        Json(AddProductResponse { product_id }),
    )
        .into_response();
    Ok(with_position(created, position))
}

/// A catalog change by an administrator, answered 204.
pub(crate) enum CatalogChange {
    Change(ProductChange),
    AdjustStock { quantity: i64, reason: String },
    Retire,
}

/// Makes a catalog change (admin), after the role check, as the API and the
/// console do.
pub(crate) async fn change_catalog_as(
    state: &AppState,
    caller: CurrentUser,
    context: RequestContext,
    product_id: ProductId,
    change: CatalogChange,
) -> Result<Option<orders_store::event_store::LogPosition>, ApiError> {
    require_role(state, caller, &[Role::Admin]).await?;
    let metadata = admin_metadata(caller, context);
    let receipt = match change {
        CatalogChange::Change(change) => {
            catalog::change_product(&state.events, product_id, change, &metadata)
                .await
                .map_err(|error| match error {
                    ChangeProductError::Price(error) => price_error(error),
                    ChangeProductError::Command(error) => {
                        product_command_error(error, "changing a product")
                    }
                })?
        }
        CatalogChange::AdjustStock { quantity, reason } => {
            catalog::adjust_stock(&state.events, product_id, quantity, reason, &metadata)
                .await
                .map_err(|error| product_command_error(error, "adjusting stock"))?
        }
        CatalogChange::Retire => catalog::retire_product(&state.events, product_id, &metadata)
            .await
            .map_err(|error| product_command_error(error, "retiring a product"))?,
    };
    Ok(receipt.position)
}

async fn change_and_answer(
    state: &AppState,
    caller: CurrentUser,
    context: RequestContext,
    id: &str,
    change: CatalogChange,
) -> Result<Response, ApiError> {
    let product_id = product_id_from_path(id)?;
    let position = change_catalog_as(state, caller, context, product_id, change).await?;
    Ok(with_position(
        StatusCode::NO_CONTENT.into_response(),
        position,
    ))
}

#[utoipa::path(patch, path = "/admin/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = ChangeProductRequest,
    responses((status = 204), (status = 403, body = crate::problem::Problem), (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn change_product(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    Path(id): Path<String>,
    body: Result<AppJson<ChangeProductRequest>, ApiError>,
) -> Result<Response, ApiError> {
    require_role(&state, caller, &[Role::Admin]).await?;
    let AppJson(request) = body?;
    let change = CatalogChange::Change(product_change_request(request)?);
    change_and_answer(&state, caller, context, &id, change).await
}

#[utoipa::path(post, path = "/admin/products/{id}/stock", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = AdjustStockRequest,
    responses((status = 204), (status = 403, body = crate::problem::Problem), (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn adjust_stock(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    Path(id): Path<String>,
    body: Result<AppJson<AdjustStockRequest>, ApiError>,
) -> Result<Response, ApiError> {
    require_role(&state, caller, &[Role::Admin]).await?;
    let AppJson(request) = body?;
    let change = CatalogChange::AdjustStock {
        quantity: request.quantity,
        reason: request.reason,
    };
    change_and_answer(&state, caller, context, &id, change).await
}

#[utoipa::path(delete, path = "/admin/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = crate::problem::Problem), (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem)))]
pub async fn retire_product(
    State(state): State<Arc<AppState>>,
    caller: CurrentUser,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    change_and_answer(&state, caller, context, &id, CatalogChange::Retire).await
}
