-- The child Neovim's init (`nvim --embed --clean -u init.lua`): the plugin on 'runtimepath', and `T`,
-- helpers the driver calls through RPC to read the editor's state.
local repo = assert(vim.env.DG_REPO, 'DG_REPO is not set')
vim.opt.runtimepath:prepend(repo .. '/editors/nvim')
vim.opt.swapfile = false
vim.opt.shortmess:append('I')

_G.T = { notes = {} }

local notify = vim.notify
vim.notify = function(msg, level, opts) ---@diagnostic disable-line: duplicate-set-field
  table.insert(T.notes, { msg = msg, level = level or vim.log.levels.INFO })
  return notify(msg, level, opts)
end

--- The ghost text shown in the current buffer (Neovim's or dg's extmarks): first line, then the
--- virtual lines, joined by newlines; nil when none is shown. Second value: the namespace drawing it.
function T.ghost()
  local buf = vim.api.nvim_get_current_buf()
  for _, name in ipairs({ 'nvim.lsp.inline_completion', 'dg.ghost' }) do
    local ns = vim.api.nvim_get_namespaces()[name]
    for _, mark in ipairs(ns and vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true }) or {}) do
      local chunks = function(list) return table.concat(vim.tbl_map(function(c) return c[1] end, list or {})) end
      local lines = { chunks(mark[4].virt_text) }
      for _, line in ipairs(mark[4].virt_lines or {}) do
        lines[#lines + 1] = chunks(line)
      end
      return table.concat(lines, '\n'), name
    end
  end
  return nil
end

function T.ghost_namespace()
  return select(2, T.ghost())
end

function T.lines()
  return vim.api.nvim_buf_get_lines(0, 0, -1, true)
end

function T.mode()
  return vim.api.nvim_get_mode().mode
end

--- The dg-lsp client's last dg/status ({} before the first).
function T.status()
  local client = require('dg.server').clients()[1]
  return client and require('dg.status').get(client.id) or {}
end

--- The server's dg/stats counters (nil when no server runs).
function T.stats()
  local client = require('dg.server').clients()[1]
  local reply = client and client:request_sync('dg/stats', {}, 5000)
  return reply and reply.result
end

--- Notes (vim.notify) whose text matches `pattern`.
function T.noted(pattern)
  return vim.tbl_filter(function(n) return n.msg:find(pattern) ~= nil end, T.notes)
end

--- Lua error traces and Vim errors in the message history: what a user must never see.
function T.errors()
  local messages = vim.api.nvim_exec2('messages', { output = true }).output
  local found = {}
  for _, line in ipairs(vim.split(messages, '\n')) do
    if line:find('traceback') or line:find('^E%d+:') or line:find('Error executing') or line:find('Error detected') then
      found[#found + 1] = line
    end
  end
  return found
end
