--- Ghost text drawn by dg itself, for Neovim 0.10/0.11 (0.12 has vim.lsp.inline_completion): an
--- extmark with `virt_text` at the cursor for the first line and `virt_lines` for the rest. Moving the
--- cursor or typing hides it and asks again after `ghost.debounce_ms`; leaving insert mode hides it.
local config = require('dg.config')
local server = require('dg.server')
local M = {}

local ns = vim.api.nvim_create_namespace('dg.ghost')
local state = {} ---@type table<integer, {client_id: integer, timer: uv.uv_timer_t, request?: integer, item?: table}>

local function hide(bufnr)
  local s = state[bufnr]
  if s then
    local client = s.request and vim.lsp.get_client_by_id(s.client_id)
    if client then
      server.call(client, 'cancel_request', s.request)
    end
    s.request, s.item = nil, nil
  end
  vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
end

local function show(bufnr, item)
  local lines = vim.split(item.text, '\r?\n')
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { lines[i], 'Comment' } }
  end
  vim.api.nvim_buf_set_extmark(bufnr, ns, item.row, item.col, {
    virt_text = { { lines[1], 'Comment' } }, virt_text_pos = 'inline', virt_lines = virt_lines, hl_mode = 'combine',
  })
  state[bufnr].item = item
end

--- Only items that insert at the cursor are drawn (dg-lsp sends no others).
local function at_cursor(item, position)
  local r = item.range
  return not r or (vim.deep_equal(r.start, position) and vim.deep_equal(r['end'], position))
end

local function request(bufnr)
  local s, client = state[bufnr], vim.lsp.get_client_by_id(state[bufnr] and state[bufnr].client_id or -1)
  if not client or vim.api.nvim_get_current_buf() ~= bufnr or not vim.api.nvim_get_mode().mode:find('^i') then
    return
  end
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = 2 } -- Automatic
  local cursor, tick = vim.api.nvim_win_get_cursor(0), vim.b[bufnr].changedtick
  local _, id = server.call(client, 'request', 'textDocument/inlineCompletion', params, function(err, result)
    s.request = nil
    local item = not err and result and (result.items or result)[1]
    local moved = vim.b[bufnr].changedtick ~= tick or not vim.deep_equal(vim.api.nvim_win_get_cursor(0), cursor)
    if not item or moved or not vim.api.nvim_get_mode().mode:find('^i') or not at_cursor(item, params.position) then
      return
    end
    local text = type(item.insertText) == 'string' and item.insertText or item.insertText.value
    show(bufnr, { row = cursor[1] - 1, col = cursor[2], text = text, command = item.command })
  end, bufnr)
  s.request = id
end

local function schedule(bufnr)
  hide(bufnr)
  local s = state[bufnr]
  s.timer:stop()
  s.timer:start(config.options.ghost.debounce_ms, 0, vim.schedule_wrap(function() request(bufnr) end))
end

function M.attach(client, bufnr)
  if state[bufnr] then
    state[bufnr].client_id = client.id
    return
  end
  state[bufnr] = { client_id = client.id, timer = assert(vim.uv.new_timer()) }
  local group = vim.api.nvim_create_augroup('dg.virt.' .. bufnr, { clear = true })
  local on = function(events, fn) vim.api.nvim_create_autocmd(events, { group = group, buffer = bufnr, callback = fn }) end
  on({ 'InsertEnter', 'CursorMovedI', 'TextChangedI' }, function() schedule(bufnr) end)
  on({ 'InsertLeave', 'BufLeave' }, function() state[bufnr].timer:stop() hide(bufnr) end)
  on({ 'BufWipeout', 'LspDetach' }, function(ev)
    if not state[bufnr] or (ev.event == 'LspDetach' and ev.data.client_id ~= state[bufnr].client_id) then
      return
    end
    hide(bufnr)
    state[bufnr].timer:close()
    state[bufnr] = nil
    vim.api.nvim_del_augroup_by_id(group)
  end)
end

function M.accept(bufnr, kind)
  local item = state[bufnr] and state[bufnr].item
  if not item then
    return false
  end
  local client = vim.lsp.get_client_by_id(state[bufnr].client_id)
  vim.schedule(function() -- called from an <expr> mapping, where the text is locked
    hide(bufnr)
    require('dg.ghost').insert(bufnr, { row = item.row, col = item.col, end_row = item.row, end_col = item.col }, item.text, kind)
    if kind == 'all' and item.command and client then -- as vim.lsp.inline_completion does on accept (the
      -- server then computes the next completion while idle); the request flushes the didChange first
      server.call(client, 'request', 'workspace/executeCommand',
        { command = item.command.command, arguments = item.command.arguments }, function() end, bufnr)
    end
  end)
  return true
end

function M.dismiss(bufnr)
  local shown = state[bufnr] and state[bufnr].item ~= nil
  hide(bufnr)
  return shown
end

return M
