package graph_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/graph"
	"github.com/azuma/mimoto/oidc/federation"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/oidc/signing"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/apps"
	"github.com/azuma/mimoto/portal/auth"
	"github.com/azuma/mimoto/portal/members"
	"github.com/azuma/mimoto/portal/operator"
)

// appsPortal is a portal as `mimoto serve` wires it for apps: with a federation (the
// apps' entity statements served on the same host) and the OIDC provider, whose
// client cache the portal clears.
type appsPortal struct {
	*portal
	entities *federation.Entities
	owner    *http.Client
}

func newAppsPortal(t *testing.T) *appsPortal {
	t.Helper()
	ctx := context.Background()
	d := dbtest.New(t)
	kek, _ := keyring.GenerateKEK()
	ring, err := keyring.New(kek)
	if err != nil {
		t.Fatal(err)
	}
	accounts, err := account.New(kek, account.Config{})
	if err != nil {
		t.Fatal(err)
	}
	secretKey, _ := kek.DeriveKey("mimoto/oidc/client-secret/v1")
	hmacKey, _ := kek.DeriveKey("mimoto/oidc/token-hmac/v1")
	secrets, _ := provider.NewSecretHasher(secretKey)
	keys, err := signing.New(d.App, kek, signing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Ensure(ctx); err != nil {
		t.Fatal(err)
	}

	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	entities, err := federation.New(d.App, ring, federation.Options{PublicBaseURL: srv.URL,
		MasterEntityID: "http://127.0.0.1:9", AllowHTTPLoopback: true, Contacts: []string{"support@mimoto.test"}})
	if err != nil {
		t.Fatal(err)
	}
	prov, err := provider.New(provider.Config{Issuer: srv.URL, DB: d.App, Ring: ring, Keys: keys, Secrets: secrets,
		HMACSecret: hmacKey, Scopes: []string{"openid", "urn:telematik:versicherter"}})
	if err != nil {
		t.Fatal(err)
	}
	svc := apps.New(secrets, entities)
	svc.SetClientCache(prov)
	mux.Handle(graph.Path, graph.Handler(&graph.Resolver{DB: d.App, Auth: auth.New(d.App, accounts, auth.Config{}), Apps: svc,
		Members: members.New(d.App, members.Config{BaseURL: srv.URL}), Operators: operator.New(d.App),
		Deletion: newDeletionService(t, d)}, graph.Options{}))
	prov.Mount(mux)
	mux.Handle("GET /{appKey}"+federation.StatementPathSuffix, entities.Handler())

	p := &appsPortal{portal: &portal{t: t, srv: srv, client: newBrowser(), db: d, tenant: uuid.New()}, entities: entities}
	p.owner = p.member(p.tenant, "owner@praxis.test", "owner")
	return p
}

const (
	qAppDetail = `query($id: ID!, $a: ID!) { tenant(id: $id) { app(id: $a) { id clientId authMethod jwksUri
		federation { entityId statementUrl status statusNote statusChangedAt entityKeyId encryptionKeyId
			tlsCertificate { keyId sha256Fingerprint notAfter } } } } }`
	qUpdateJWKS   = `mutation($t: ID!, $a: ID!, $in: UpdateAppInput!) { updateApp(tenantId: $t, appId: $a, input: $in) { jwksUri } }`
	qDeleteApp    = `mutation($t: ID!, $a: ID!) { deleteApp(tenantId: $t, appId: $a) { appId clientId entityId federationStatus } }`
	qSetFedStatus = `mutation($a: ID!, $s: AppFederationStatus!, $n: String) { setAppFederationStatus(appId: $a, status: $s, note: $n) { appId tenantId status note changedAt } }`
)

// testJWKS is a public key set for private_key_jwt apps.
func testJWKS(t *testing.T) string {
	t.Helper()
	raw := `{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","use":"sig","alg":"ES256",` +
		`"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(raw), &set); err != nil || !set.Keys[0].Valid() {
		t.Fatalf("test JWKS: %v", err)
	}
	return raw
}

func (p *appsPortal) createApp(c *http.Client, in map[string]any) (id, clientID, secret string) {
	p.t.Helper()
	r := p.do(c, qCreateApp, map[string]any{"t": p.tenant, "in": in})
	if r.code() != "" {
		p.t.Fatalf("creating an app: %+v", r)
	}
	payload := r.Data["createApp"].(map[string]any)
	app := payload["app"].(map[string]any)
	secret, _ = payload["clientSecret"].(string)
	return app["id"].(string), app["clientId"].(string), secret
}

func (p *appsPortal) appDetail(c *http.Client, appID string) (map[string]any, gqlResponse) {
	p.t.Helper()
	r := p.do(c, qAppDetail, map[string]any{"id": p.tenant, "a": appID})
	if r.code() != "" {
		return nil, r
	}
	return r.Data["tenant"].(map[string]any)["app"].(map[string]any), r
}

// jwksUri: https only, public hosts only, never with inline keys, only for
// PRIVATE_KEY_JWT; on update jwks and jwksUri replace each other.
func TestAppJWKSURI(t *testing.T) {
	p := newAppsPortal(t)
	jwks := testJWKS(t)
	// input is a new app with authMethod and one more field set.
	input := func(method, field, value string) map[string]any {
		in := appInput("App")
		in["authMethod"] = method
		if field != "" {
			in[field] = value
		}
		return in
	}
	const jwt, basic, none = "PRIVATE_KEY_JWT", "CLIENT_SECRET_BASIC", "NONE"
	both := input(jwt, "jwks", jwks)
	both["jwksUri"] = "https://keys.app.example/jwks.json"
	for name, c := range map[string]struct {
		in    map[string]any
		field string
	}{
		"http":              {input(jwt, "jwksUri", "http://keys.app.example/jwks.json"), "jwksUri"},
		"relative":          {input(jwt, "jwksUri", "/jwks.json"), "jwksUri"},
		"user info":         {input(jwt, "jwksUri", "https://u:p@keys.app.example/jwks.json"), "jwksUri"},
		"fragment":          {input(jwt, "jwksUri", "https://keys.app.example/jwks.json#k"), "jwksUri"},
		"loopback":          {input(jwt, "jwksUri", "https://127.0.0.1/jwks.json"), "jwksUri"},
		"localhost":         {input(jwt, "jwksUri", "https://localhost:8443/jwks.json"), "jwksUri"},
		"private address":   {input(jwt, "jwksUri", "https://10.1.2.3/jwks.json"), "jwksUri"},
		"link-local":        {input(jwt, "jwksUri", "https://[fe80::1]/jwks.json"), "jwksUri"},
		"too long":          {input(jwt, "jwksUri", "https://keys.app.example/"+strings.Repeat("a", 2000)), "jwksUri"},
		"both":              {both, "jwksUri"},
		"neither":           {input(jwt, "", ""), "jwks"},
		"secret and uri":    {input(basic, "jwksUri", "https://keys.app.example/jwks.json"), "jwksUri"},
		"public and uri":    {input(none, "jwksUri", "https://keys.app.example/jwks.json"), "jwksUri"},
		"secret and inline": {input(basic, "jwks", jwks), "jwks"},
	} {
		r := p.do(p.owner, qCreateApp, map[string]any{"t": p.tenant, "in": c.in})
		if r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != c.field {
			t.Errorf("%s: %+v", name, r)
		}
	}

	// A valid jwksUri is stored and shown; the provider loads it as the client's
	// jwks_uri (the database's own checks agree).
	const uri = "https://keys.app.example/.well-known/jwks.json"
	id, clientID, secret := p.createApp(p.owner, input(jwt, "jwksUri", uri))
	if secret != "" {
		t.Fatalf("a private_key_jwt app got a secret")
	}
	app, r := p.appDetail(p.owner, id)
	if app == nil || app["jwksUri"] != uri || app["authMethod"] != "PRIVATE_KEY_JWT" {
		t.Fatalf("app with jwksUri: %+v", r)
	}
	stored := func() (jwks, jwksURI *string) {
		t.Helper()
		err := p.db.App.InTenant(context.Background(), p.tenant, func(ctx context.Context, tx bun.Tx) error {
			return tx.QueryRowContext(ctx, `SELECT jwks::text, jwks_uri FROM apps WHERE client_id = ?`, clientID).Scan(&jwks, &jwksURI)
		})
		if err != nil {
			t.Fatal(err)
		}
		return jwks, jwksURI
	}
	if j, u := stored(); j != nil || u == nil || *u != uri {
		t.Fatalf("stored jwks %v, jwks_uri %v", j, u)
	}

	// Updates: inline keys replace the URI, a URI replaces inline keys; bad URIs and
	// both at once are refused; removing the only keys is refused.
	upd := func(in map[string]any) gqlResponse {
		return p.do(p.owner, qUpdateJWKS, map[string]any{"t": p.tenant, "a": id, "in": in})
	}
	if r := upd(map[string]any{"jwks": jwks}); r.code() != "" || r.Data["updateApp"].(map[string]any)["jwksUri"] != nil {
		t.Fatalf("switching to inline keys: %+v", r)
	}
	if j, u := stored(); j == nil || u != nil {
		t.Fatalf("after switching to inline keys: jwks %v, jwks_uri %v", j, u)
	}
	if r := upd(map[string]any{"jwksUri": "http://keys.app.example/jwks.json"}); r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != "jwksUri" {
		t.Fatalf("update to an http jwksUri: %+v", r)
	}
	if r := upd(map[string]any{"jwksUri": uri, "jwks": jwks}); r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != "jwksUri" {
		t.Fatalf("update with both: %+v", r)
	}
	if r := upd(map[string]any{"jwks": ""}); r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != "jwks" {
		t.Fatalf("removing the only keys: %+v", r)
	}
	if r := upd(map[string]any{"jwksUri": uri}); r.code() != "" || r.Data["updateApp"].(map[string]any)["jwksUri"] != uri {
		t.Fatalf("switching back to the URI: %+v", r)
	}
	if j, u := stored(); j != nil || u == nil {
		t.Fatalf("after switching back: jwks %v, jwks_uri %v", j, u)
	}
	// A client_secret_basic app cannot take a jwksUri later either.
	basicID, _, _ := p.createApp(p.owner, appInput("Basic"))
	if r := p.do(p.owner, qUpdateJWKS, map[string]any{"t": p.tenant, "a": basicID, "in": map[string]any{"jwksUri": uri}}); r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != "jwksUri" {
		t.Fatalf("jwksUri on a client_secret_basic app: %+v", r)
	}
}

// The federation view on an app shows exactly what the federation handler serves:
// the statement at statementUrl is the entity's (iss = sub = entityId), signed with
// entityKeyId, publishing the encryption key and the certificate shown.
func TestAppFederationView(t *testing.T) {
	p := newAppsPortal(t)
	id, _, _ := p.createApp(p.owner, appInput("Praxis-App"))
	auditor := p.member(p.tenant, "auditor@praxis.test", "auditor")
	app, r := p.appDetail(auditor, id)
	if app == nil {
		t.Fatalf("auditor reading the app: %+v", r)
	}
	fed, _ := app["federation"].(map[string]any)
	if fed == nil {
		t.Fatalf("no federation view: %+v", r)
	}
	entityID, _ := fed["entityId"].(string)
	if !strings.HasPrefix(entityID, p.srv.URL+"/") || fed["statementUrl"] != entityID+"/.well-known/openid-federation" {
		t.Fatalf("entity id %q, statement URL %v", entityID, fed["statementUrl"])
	}
	if fed["status"] != "NOT_SUBMITTED" || fed["statusNote"] != nil || fed["statusChangedAt"] != nil {
		t.Fatalf("initial status: %v", fed)
	}
	appUUID := uuid.MustParse(id)
	reg, err := p.entities.RegistrationInfo(context.Background(), p.tenant, appUUID)
	if err != nil {
		t.Fatal(err)
	}
	cert := fed["tlsCertificate"].(map[string]any)
	if reg.EntityID != entityID || reg.StatementURL != fed["statementUrl"] || reg.EntityKey.KID != fed["entityKeyId"] ||
		reg.Certificates[0].SHA256Fingerprint != cert["sha256Fingerprint"] || reg.Certificates[0].KID != cert["keyId"] {
		t.Fatalf("view %v differs from the registration info %+v", fed, reg)
	}
	if na, _ := time.Parse(time.RFC3339, cert["notAfter"].(string)); !na.Equal(reg.Certificates[0].NotAfter) {
		t.Fatalf("notAfter %v, certificate %v", cert["notAfter"], reg.Certificates[0].NotAfter)
	}

	// What the federation handler serves at that URL.
	resp, err := http.Get(fed["statementUrl"].(string))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != federation.ContentTypeEntityStatement {
		t.Fatalf("statement URL: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	jws, err := jose.ParseSigned(string(body), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Iss, Sub string
		JWKS     jose.JSONWebKeySet `json:"jwks"`
		Metadata struct {
			RP struct {
				JWKS jose.JSONWebKeySet `json:"jwks"`
			} `json:"openid_relying_party"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Iss != entityID || claims.Sub != entityID || jws.Signatures[0].Header.KeyID != fed["entityKeyId"] {
		t.Fatalf("statement iss %s sub %s kid %s; view %v", claims.Iss, claims.Sub, jws.Signatures[0].Header.KeyID, fed)
	}
	if keys := claims.JWKS.Key(fed["entityKeyId"].(string)); len(keys) != 1 {
		t.Fatal("the entity key is not in the statement's jwks")
	} else if _, err := jws.Verify(keys[0]); err != nil {
		t.Fatalf("statement does not verify with the entity key: %v", err)
	}
	var encFound, certFound bool
	for _, k := range claims.Metadata.RP.JWKS.Keys {
		if k.Use == "enc" && k.KeyID == fed["encryptionKeyId"] {
			encFound = true
		}
		if k.KeyID == cert["keyId"] && len(k.Certificates) == 1 {
			sum := sha256.Sum256(k.Certificates[0].Raw)
			certFound = fingerprintOf(sum[:]) == cert["sha256Fingerprint"]
		}
	}
	if !encFound || !certFound {
		t.Fatalf("statement publishes enc key %v, certificate %v (view %v)", encFound, certFound, fed)
	}

	// Billing has no apps.read; another tenant's app is NOT_FOUND.
	billing := p.member(p.tenant, "billing@praxis.test", "billing")
	if _, r := p.appDetail(billing, id); r.code() != graph.CodeForbidden {
		t.Fatalf("billing reading an app: %+v", r)
	}
	if _, r := p.appDetail(p.owner, uuid.NewString()); r.code() != graph.CodeNotFound {
		t.Fatalf("unknown app: %+v", r)
	}
}

func fingerprintOf(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// Only platform operators set an app's registration status; the tenant reads it, and
// sees each change in its own trail. The database refuses the service role's own
// attempts, whatever a resolver might do.
func TestAppFederationStatusByOperatorsOnly(t *testing.T) {
	p := newAppsPortal(t)
	id, _, _ := p.createApp(p.owner, appInput("App"))
	dev := p.member(p.tenant, "dev@praxis.test", "developer")
	admin := p.member(p.tenant, "admin@praxis.test", "admin")
	op, opID := p.operator("ops@azuma.test")
	set := map[string]any{"a": id, "s": "SUBMITTED", "n": "gematik ticket 4711"}
	for name, c := range map[string]*http.Client{"owner": p.owner, "admin": admin, "developer": dev} {
		if r := p.do(c, qSetFedStatus, set); r.code() != graph.CodeForbidden {
			t.Errorf("%s setting the federation status: %+v", name, r)
		}
	}
	if r := p.do(op, qSetFedStatus, map[string]any{"a": uuid.NewString(), "s": "SUBMITTED"}); r.code() != graph.CodeNotFound {
		t.Fatalf("operator, unknown app: %+v", r)
	}
	if r := p.do(op, qSetFedStatus, map[string]any{"a": id, "s": "SUBMITTED", "n": strings.Repeat("x", 501)}); r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != "note" {
		t.Fatalf("operator, long note: %+v", r)
	}
	r := p.do(op, qSetFedStatus, set)
	if r.code() != "" {
		t.Fatalf("operator setting SUBMITTED: %+v", r)
	}
	got := r.Data["setAppFederationStatus"].(map[string]any)
	if got["status"] != "SUBMITTED" || got["tenantId"] != p.tenant.String() || got["note"] != "gematik ticket 4711" || got["changedAt"] == nil {
		t.Fatalf("operator's answer: %v", got)
	}
	// The same again changes nothing; then REGISTERED.
	p.do(op, qSetFedStatus, set)
	if r := p.do(op, qSetFedStatus, map[string]any{"a": id, "s": "REGISTERED"}); r.code() != "" || r.Data["setAppFederationStatus"].(map[string]any)["note"] != nil {
		t.Fatalf("operator setting REGISTERED: %+v", r)
	}
	// Tenant roles with apps.read see it.
	for name, c := range map[string]*http.Client{"owner": p.owner, "developer": dev} {
		app, r := p.appDetail(c, id)
		if app == nil || app["federation"].(map[string]any)["status"] != "REGISTERED" || app["federation"].(map[string]any)["statusChangedAt"] == nil {
			t.Errorf("%s reading the status: %+v", name, r)
		}
	}
	// The tenant's trail: two changes, by the operator; the platform trail: three runs.
	var changes []map[string]any
	for _, e := range p.trail(p.owner, map[string]any{"a": "app.federation_status_change"}) {
		changes = append(changes, e)
	}
	if len(changes) != 2 || changes[0]["actor"] != "operator:"+opID.String() || changes[0]["target"] != "app:"+id {
		t.Fatalf("tenant trail: %v", changes)
	}
	if n := len(p.platformEvents("maintenance.operator.apps.set_federation_status")); n != 4 { // incl. the unknown app (failure)
		t.Fatalf("platform trail: %d events", n)
	}
	if n := len(p.platformEvents("authz.denied")); n < 3 {
		t.Fatalf("refusals in the platform trail: %d", n)
	}
	// The service role cannot set it, not even in the tenant's own transaction.
	for _, q := range []string{
		`UPDATE apps SET federation_status = 'revoked' WHERE tenant_id = ?`,
		`UPDATE apps SET federation_status_note = 'x' WHERE tenant_id = ?`,
		`INSERT INTO apps (tenant_id, name, client_id, federation_status) VALUES (?, 'x', 'x-forged', 'registered')`,
	} {
		err := p.db.App.InTenant(context.Background(), p.tenant, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.ExecContext(ctx, q, p.tenant)
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "federation_status") {
			t.Errorf("%s: %v", q, err)
		}
	}
}

// deleteApp: owner and admin only; the client_id is refused at /token at once (the
// provider's cache is cleared), the entity statement is gone, the meta data stays
// for billing; another tenant's app ids are NOT_FOUND everywhere.
func TestDeleteApp(t *testing.T) {
	p := newAppsPortal(t)
	ctx := context.Background()
	id, clientID, secret := p.createApp(p.owner, appInput("Doomed"))
	dev := p.member(p.tenant, "dev@praxis.test", "developer")
	other := uuid.New()
	stranger := p.member(other, "boss@andere.test", "owner")
	app, _ := p.appDetail(p.owner, id)
	statementURL := app["federation"].(map[string]any)["statementUrl"].(string)
	entityID := app["federation"].(map[string]any)["entityId"].(string)

	token := func() (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, p.srv.URL+provider.PathToken, strings.NewReader(url.Values{
			"grant_type": {"authorization_code"}, "code": {"not-a-code"}, "redirect_uri": {"https://app.example/cb"},
			"code_verifier": {strings.Repeat("v", 43)}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(clientID)+":"+url.QueryEscape(secret))))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body.Error
	}
	// The statement is served (and now cached), the client authenticates (the code is
	// bogus) and is now in the provider's cache.
	if resp, err := http.Get(statementURL); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("statement before deletion: %v %v", resp, err)
	}
	if status, e := token(); e != "invalid_grant" {
		t.Fatalf("/token before deletion: %d %s", status, e)
	}
	// Meta data of a login, for billing.
	err := p.db.App.InTenant(ctx, p.tenant, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO login_events (tenant_id, app_id, step, outcome, pseudonym) VALUES (?, ?, 'authenticated', 'success', '\x01')`, p.tenant, id)
		if err != nil {
			return err
		}
		// An open login and a pushed request of the app, which go with it.
		if _, err := tx.ExecContext(ctx, `INSERT INTO login_transactions (tenant_id, app_id, state, expires_at) VALUES (?, ?, 'started', now() + interval '5 minutes')`, p.tenant, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO oauth_requests (kind, signature_hash, tenant_id, app_id, request_id, payload, expires_at)
			VALUES ('par', '\x02', ?, ?, 'r1', '\x03', now() + interval '1 minute')`, p.tenant, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// Another tenant: NOT_FOUND for app, updateApp and deleteApp, naming this tenant
	// or its own.
	for _, tenant := range []uuid.UUID{p.tenant, other} {
		if r := p.do(stranger, qAppDetail, map[string]any{"id": tenant, "a": id}); r.code() != graph.CodeNotFound {
			t.Errorf("stranger reading the app via tenant %s: %+v", tenant, r)
		}
		if r := p.do(stranger, qUpdateJWKS, map[string]any{"t": tenant, "a": id, "in": map[string]any{"name": "x"}}); r.code() != graph.CodeNotFound {
			t.Errorf("stranger updating the app via tenant %s: %+v", tenant, r)
		}
		if r := p.do(stranger, qDeleteApp, map[string]any{"t": tenant, "a": id}); r.code() != graph.CodeNotFound {
			t.Errorf("stranger deleting the app via tenant %s: %+v", tenant, r)
		}
	}
	// A developer may change apps, not delete them.
	if r := p.do(dev, qDeleteApp, map[string]any{"t": p.tenant, "a": id}); r.code() != graph.CodeForbidden {
		t.Fatalf("developer deleting: %+v", r)
	}

	r := p.do(p.owner, qDeleteApp, map[string]any{"t": p.tenant, "a": id})
	if r.code() != "" {
		t.Fatalf("owner deleting: %+v", r)
	}
	got := r.Data["deleteApp"].(map[string]any)
	if got["appId"] != id || got["clientId"] != clientID || got["entityId"] != entityID || got["federationStatus"] != "NOT_SUBMITTED" {
		t.Fatalf("deleteApp answer: %v", got)
	}
	// At once, although the provider cached the client a moment ago.
	if status, e := token(); status != http.StatusUnauthorized || e != "invalid_client" {
		t.Fatalf("/token after deletion: %d %s", status, e)
	}
	if resp, err := http.Get(statementURL); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("statement after deletion: %v %v", resp, err)
	}
	if _, r := p.appDetail(p.owner, id); r.code() != graph.CodeNotFound {
		t.Fatalf("reading the deleted app: %+v", r)
	}
	if r := p.do(p.owner, qDeleteApp, map[string]any{"t": p.tenant, "a": id}); r.code() != graph.CodeNotFound {
		t.Fatalf("deleting it again: %+v", r)
	}
	var keys, events, tombstones, open int
	err = p.db.App.InTenant(ctx, p.tenant, func(ctx context.Context, tx bun.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM app_federation_keys WHERE app_id = ?),
			(SELECT count(*) FROM login_events WHERE app_id = ?), (SELECT count(*) FROM deleted_apps WHERE app_id = ?),
			(SELECT count(*) FROM login_transactions WHERE app_id = ?) + (SELECT count(*) FROM oauth_requests WHERE app_id = ?)`,
			id, id, id, id, id).Scan(&keys, &events, &tombstones, &open)
	})
	if err != nil || keys != 0 || events != 1 || tombstones != 1 || open != 0 {
		t.Fatalf("after deletion: %d keys, %d login events, %d tombstones, %d open logins and requests (%v)", keys, events, tombstones, open, err)
	}
	// Billing still counts the login, under the app's name.
	r = p.do(p.owner, `query($id: ID!) { tenant(id: $id) { usage { appId appName appDeleted logins } } }`, map[string]any{"id": p.tenant})
	usage, _ := r.Data["tenant"].(map[string]any)["usage"].([]any)
	if len(usage) != 1 || usage[0].(map[string]any)["appName"] != "Doomed" || usage[0].(map[string]any)["appDeleted"] != true {
		t.Fatalf("usage after deletion: %+v", r)
	}
	// Audited.
	trail := p.trail(p.owner, map[string]any{"a": "app.deleted"})
	if len(trail) != 1 || trail[0]["target"] != "app:"+id {
		t.Fatalf("app.deleted events: %v", trail)
	}
	// An admin may delete too.
	admin := p.member(p.tenant, "admin@praxis.test", "admin")
	id2, _, _ := p.createApp(admin, appInput("Second"))
	if r := p.do(admin, qDeleteApp, map[string]any{"t": p.tenant, "a": id2}); r.code() != "" {
		t.Fatalf("admin deleting: %+v", r)
	}
}
