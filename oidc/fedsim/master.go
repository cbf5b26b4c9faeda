package fedsim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Paths of the federation master, as gematik's master names them.
const (
	pathFetch    = "/federation/fetch"
	pathList     = "/federation/list"
	pathListIdPs = "/federation/listidps"
)

// statementLifetime is how long the master's statements (its own, those about
// members, the IdP list) are valid: about a day, as the contract says of the IdP list.
const statementLifetime = 24 * time.Hour

// master is the simulated federation master (gematik's role): trust anchor, registry
// of relying parties, and publisher of the IdP list.
type master struct {
	f        *Federation
	entityID string
	key      *keyPair
}

func newMaster(f *Federation, entityID string) (*master, error) {
	key, err := newKeyPair()
	if err != nil {
		return nil, err
	}
	return &master{f: f, entityID: entityID, key: key}, nil
}

func (m *master) handler() http.Handler {
	mux := http.NewServeMux()
	get := func(path string, h http.HandlerFunc) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				methodNotAllowed(w, http.MethodGet)
				return
			}
			h(w, r)
		})
	}
	get(wellKnownFederation, m.serveStatement)
	get(pathFetch, m.serveFetch)
	get(pathList, m.serveList)
	get(pathListIdPs, m.serveIdPList)
	return mux
}

func writeJWT(w http.ResponseWriter, ct, token string) {
	w.Header().Set(headerContentType, ct)
	w.Header().Set(headerCacheControl, "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(token))
}

// serveStatement is the master's self-signed entity configuration: its keys and the
// three endpoints a relying party starts from; no authority_hints (it is the anchor).
func (m *master) serveStatement(w http.ResponseWriter, r *http.Request) {
	now := m.f.now()
	tok, err := signJWS(m.key, typEntityStatement, map[string]any{
		"iss":  m.entityID,
		"sub":  m.entityID,
		"iat":  now.Unix(),
		"exp":  now.Add(statementLifetime).Unix(),
		"jwks": jose.JSONWebKeySet{Keys: []jose.JSONWebKey{m.key.publicJWK()}},
		"metadata": map[string]any{
			"federation_entity": map[string]any{
				"federation_fetch_endpoint": m.entityID + pathFetch,
				"federation_list_endpoint":  m.entityID + pathList,
				"idp_list_endpoint":         m.entityID + pathListIdPs,
				"name":                      "Simulierter Federation Master",
				"organization_name":         "mimoto fedsim (Testumgebung)",
				"homepage_uri":              m.entityID,
			},
		},
	}, nil)
	if err != nil {
		m.f.log.Error("fedsim master: sign statement", "err", err)
		http.Error(w, "signing failed", http.StatusInternalServerError)
		return
	}
	writeJWT(w, ctEntityStatement, tok)
}

// serveFetch issues the master's statement about a subordinate: an IdP or a
// registered relying party. Errors follow the contract: 400 invalid_request.
func (m *master) serveFetch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	iss, sub := q.Get("iss"), q.Get("sub")
	switch {
	case sub == "":
		writeError(w, badRequest("parameter sub is missing"))
		return
	case iss == "":
		writeError(w, badRequest("parameter iss is missing"))
		return
	case iss != m.entityID:
		writeError(w, badRequest("iss is not this federation master"))
		return
	}
	now := m.f.now()
	claims := map[string]any{
		"iss": m.entityID,
		"sub": sub,
		"iat": now.Unix(),
		"exp": now.Add(statementLifetime).Unix(),
	}
	if d, err := m.f.idp(sub); err == nil {
		claims["jwks"] = jose.JSONWebKeySet{Keys: []jose.JSONWebKey{d.entityKey.publicJWK()}}
		claims["metadata"] = map[string]any{
			"openid_provider": map[string]any{"client_registration_types_supported": []string{"automatic"}},
		}
	} else if reg, ok := m.f.registration(sub); ok {
		keys, err := m.rpKeys(r.Context(), reg)
		if err != nil {
			m.f.log.Info("fedsim master: keys of registered relying party unavailable", "sub", sub, "err", err)
			writeError(w, badRequest("the federation keys of "+sub+" are unavailable: "+err.Error()))
			return
		}
		claims["jwks"] = keys
		claims["metadata"] = map[string]any{
			"openid_relying_party": map[string]any{
				"client_registration_types": []string{"automatic"},
				"redirect_uris":             reg.redirectURIs,
				"scope":                     strings.Join(reg.scopes, " "),
			},
		}
	} else {
		writeError(w, badRequest("unknown subject "+sub))
		return
	}
	tok, err := signJWS(m.key, typEntityStatement, claims, nil)
	if err != nil {
		m.f.log.Error("fedsim master: sign statement", "err", err)
		http.Error(w, "signing failed", http.StatusInternalServerError)
		return
	}
	writeJWT(w, ctEntityStatement, tok)
}

// rpKeys returns the federation keys the master vouches for: the pinned ones, or those
// of the relying party's current self-signed statement. The second is the simulator's
// shortcut for gematik's registration form (where the keys are uploaded); it still
// demands a well-formed, self-consistent, unexpired statement.
func (m *master) rpKeys(ctx context.Context, reg rpRegistration) (jose.JSONWebKeySet, error) {
	if reg.keys != nil {
		return *reg.keys, nil
	}
	tok, err := fetchJWT(ctx, m.f.rpClient, strings.TrimSuffix(reg.entityID, "/")+wellKnownFederation)
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	raw, err := unverifiedPayload(tok)
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	var st struct {
		Iss  string             `json:"iss"`
		Sub  string             `json:"sub"`
		Exp  int64              `json:"exp"`
		JWKS jose.JSONWebKeySet `json:"jwks"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("statement: %w", err)
	}
	if st.Iss != reg.entityID || st.Sub != reg.entityID {
		return jose.JSONWebKeySet{}, fmt.Errorf("statement iss/sub is not %s", reg.entityID)
	}
	if _, _, err := verifyJWS(tok, st.JWKS.Keys, typEntityStatement); err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("statement is not self-signed: %w", err)
	}
	if time.Unix(st.Exp, 0).Before(m.f.now()) {
		return jose.JSONWebKeySet{}, fmt.Errorf("statement expired")
	}
	pub := jose.JSONWebKeySet{}
	for _, k := range st.JWKS.Keys {
		pub.Keys = append(pub.Keys, k.Public())
	}
	return pub, nil
}

// serveList is the federation list endpoint: the entity ids of the master's
// subordinates, optionally filtered by entity_type (OpenID Federation).
func (m *master) serveList(w http.ResponseWriter, r *http.Request) {
	typ := r.URL.Query().Get("entity_type")
	out := []string{}
	if typ == "" || typ == "openid_provider" {
		for _, d := range m.f.idps {
			out = append(out, d.entityID)
		}
	}
	if typ == "" || typ == "openid_relying_party" {
		m.f.mu.Lock()
		var rps []string
		for id := range m.f.rps {
			rps = append(rps, id)
		}
		m.f.mu.Unlock()
		slices.Sort(rps)
		out = append(out, rps...)
	}
	w.Header().Set(headerContentType, "application/json;charset=UTF-8")
	_ = json.NewEncoder(w).Encode(out)
}

// serveIdPList is the IdP list a relying party shows its users (idp-list+jwt).
func (m *master) serveIdPList(w http.ResponseWriter, r *http.Request) {
	now := m.f.now()
	var entries []map[string]any
	for _, d := range m.f.idps {
		entries = append(entries, map[string]any{
			"iss":                 d.entityID,
			"organization_name":   d.spec.OrganizationName,
			"logo_uri":            d.logoURI(),
			"user_type_supported": "IP",
			"pkv":                 d.spec.PKV,
		})
	}
	tok, err := signJWS(m.key, typIdPList, map[string]any{
		"iss":        m.entityID,
		"iat":        now.Unix(),
		"exp":        now.Add(statementLifetime).Unix(),
		"idp_entity": entries,
	}, nil)
	if err != nil {
		m.f.log.Error("fedsim master: sign IdP list", "err", err)
		http.Error(w, "signing failed", http.StatusInternalServerError)
		return
	}
	writeJWT(w, ctJWT, tok)
}
